"""Re-encrypt every stored credential under the newest key in SPARKOPS_ENCRYPTION_KEYS."""

from django.core.management.base import BaseCommand
from django.db import transaction

from agents.models import ProviderCredential
from sparkops.lib import crypto


class Command(BaseCommand):
    help = "Re-encrypt stored credentials with the first key of SPARKOPS_ENCRYPTION_KEYS (idempotent)."

    def handle(self, *args, **options):
        count = 0
        for pk in ProviderCredential.objects.exclude(secret_encrypted="").values_list("pk", flat=True).iterator():
            with transaction.atomic():
                # Row by row, locked: a concurrent edit of the same credential must not be lost.
                credential = ProviderCredential.objects.select_for_update().get(pk=pk)
                credential.secret_encrypted = crypto.rotate(credential.secret_encrypted)
                credential.save(update_fields=["secret_encrypted"])
                count += 1
        self.stdout.write(self.style.SUCCESS(f"re-encrypted {count} credential(s)"))
