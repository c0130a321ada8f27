import factory
from django.utils import timezone

from accounts.models import ApiKey, User
from sparkops.roles import Role

DEFAULT_PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("name")
    password = factory.django.Password(DEFAULT_PASSWORD)


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """An API key; its full text is on ``.raw``, as the creator saw it once (it is never stored)."""

    class Meta:
        model = ApiKey

    project = factory.SubFactory("projects.tests.factories.ProjectFactory")
    created_by = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"key {n}")
    role = Role.DEVELOPER

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        raw, prefix, digest = ApiKey.generate()
        key = model_class.objects.create(*args, prefix=prefix, digest=digest, **kwargs)
        key.raw = raw
        return key


def expired() -> "timezone.datetime":
    return timezone.now() - timezone.timedelta(minutes=1)
