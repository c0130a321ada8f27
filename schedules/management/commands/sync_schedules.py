"""Repair drift between schedules and their django-celery-beat tasks."""

from django.core.management.base import BaseCommand

from schedules import services


class Command(BaseCommand):
    help = "Make every schedule's beat task match it and remove tasks of deleted schedules (idempotent)."

    def handle(self, *args, **options):
        report = services.sync_all()
        self.stdout.write(", ".join(f"{count} {what}" for what, count in report.items()))
