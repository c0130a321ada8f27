import pytest
from django.core.management import call_command

from agents.models import ProviderCredential
from projects.tests.factories import ProjectFactory
from sparkops.lib import crypto

OLD, NEW = crypto.generate_key(), crypto.generate_key()


@pytest.mark.django_db
def test_rotate_secrets_moves_every_credential_to_the_newest_key(settings):
    settings.SPARKOPS_ENCRYPTION_KEYS = [OLD]
    credential = ProviderCredential(project=ProjectFactory(), name="k", provider="echo")
    credential.set_secret("sk-live-123")
    credential.save()

    settings.SPARKOPS_ENCRYPTION_KEYS = [NEW, OLD]
    call_command("rotate_secrets")

    settings.SPARKOPS_ENCRYPTION_KEYS = [NEW]  # the old key can now be dropped
    credential.refresh_from_db()
    assert credential.get_secret() == "sk-live-123"
