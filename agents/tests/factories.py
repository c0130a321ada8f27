from decimal import Decimal

import factory
from django.utils import timezone

from agents.models import Agent, ModelPrice, ProviderCredential, Tool
from agents.tools.builtin import BUILTINS
from projects.tests.factories import ProjectFactory


class CredentialFactory(factory.django.DjangoModelFactory):
    """A credential whose secret is stored encrypted; pass ``secret=""`` for none."""

    class Meta:
        model = ProviderCredential

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"Key {n}")
    provider = "openai"
    secret = "sk-test-secret"  # not a model field: _create encrypts it

    @classmethod
    def _create(cls, model_class, *args, secret: str = "", **kwargs):
        credential = model_class(*args, **kwargs)
        credential.set_secret(secret)
        credential.save()
        return credential


class ToolFactory(factory.django.DjangoModelFactory):
    """The builtin arithmetic tool, with the input schema it knows."""

    class Meta:
        model = Tool

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"Tool {n}")
    slug = factory.Sequence(lambda n: f"tool-{n}")
    kind = "builtin"
    config = factory.LazyFunction(lambda: {"function": "arithmetic"})
    input_schema = factory.LazyAttribute(lambda tool: dict(BUILTINS[tool.config["function"]].input_schema))


class HttpToolFactory(ToolFactory):
    """An HTTP tool; point ``config["url"]`` at a local server in tests."""

    kind = "http"
    config = factory.LazyFunction(lambda: {"method": "GET", "url": "https://api.example.com/items/{{ id }}"})
    input_schema = factory.LazyFunction(lambda: {"type": "object"})


class AgentFactory(factory.django.DjangoModelFactory):
    """An echo agent: it answers offline and echo-1 has a seeded price."""

    class Meta:
        model = Agent
        skip_postgeneration_save = True

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"Agent {n}")
    slug = factory.Sequence(lambda n: f"agent-{n}")
    provider = "echo"
    model = "echo-1"
    parameters = factory.LazyFunction(dict)

    @factory.post_generation
    def tools(self, create, extracted, **kwargs):
        if create and extracted:
            self.tools.set(extracted)


class ModelPriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelPrice

    provider = "openai"
    model = factory.Sequence(lambda n: f"test-model-{n}")
    input_usd_per_mtok = Decimal("1.00")
    output_usd_per_mtok = Decimal("2.00")
    effective_from = factory.LazyFunction(lambda: timezone.now() - timezone.timedelta(days=1))
