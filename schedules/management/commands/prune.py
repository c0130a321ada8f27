"""Delete history past its retention, in small batches (what the nightly retention-prune does)."""

from django.core.management.base import BaseCommand, CommandError

from projects.models import Project
from schedules import retention


class Command(BaseCommand):
    help = (
        "Delete run events, schedule fires, policy decisions and finished runs older than each project's "
        "retention (or SPARKOPS_RETENTION_DAYS), in batches. The spend ledger is never pruned."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would go, per kind and project; delete nothing."
        )
        parser.add_argument("--batch-size", type=int, default=None, help="Rows per DELETE (SPARKOPS_PRUNE_BATCH_SIZE).")
        parser.add_argument(
            "--project", action="append", default=[], help="A project's slug (repeatable); default all."
        )

    def handle(self, *args, dry_run=False, batch_size=None, project=(), **options):
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        projects = None
        if project:
            projects = list(Project.objects.filter(slug__in=project).order_by("slug"))
            if missing := set(project) - {p.slug for p in projects}:
                raise CommandError(f"No project with slug {', '.join(sorted(missing))}.")
        report = retention.prune(dry_run=dry_run, batch_size=batch_size, projects=projects)
        verb = "would delete" if dry_run else "deleted"
        for line in report:
            self.stdout.write(
                f"{line.project.slug}: {verb} {line.rows} {line.kind.replace('_', ' ')} "
                f"(older than {line.cutoff:%Y-%m-%d %H:%M} UTC)"
            )
        if not report:
            self.stdout.write("Nothing is past its retention.")
