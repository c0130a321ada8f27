"""Roll up runs by hour now, and back to a date (what the beat's telemetry-roll-up does, plus a backfill)."""

from django.core.management.base import BaseCommand, CommandError

from telemetry import rollups
from telemetry.api.metrics import MetricsQuerySerializer


class Command(BaseCommand):
    help = (
        "Roll up runs by UTC hour for GET /api/v1/metrics and the dashboard: the hours sealed since the last tick, "
        "the last few again, and with --since every hour from then to the first one rolled (a backfill). "
        "Hours already rolled are kept as they are: their runs may have been pruned since."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="Backfill from this date (00:00 UTC) or date-time, e.g. 2026-01-01.")

    def handle(self, *args, since=None, **options):
        back_to = None
        if since is not None:
            query = MetricsQuerySerializer(data={"since": since})
            if not query.is_valid():
                raise CommandError(" ".join(query.errors["since"]))
            back_to = query.validated_data["since"]
        rolled = rollups.roll(back_to=back_to)
        self.stdout.write(
            f"Rolled {rolled.hours} hours ({rolled.runs} runs) and counted {rolled.pending_counted} runs that "
            f"finished since; rolled from {rolled.state.rolled_from:%Y-%m-%d %H}:00 "
            f"to {rolled.state.rolled_until:%Y-%m-%d %H}:00 UTC."
        )
