"""Start a run from the shell: ``run_workflow <project>/<workflow> --inputs '{...}' --wait``."""

import json
import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from policies.exceptions import PolicyRefused
from runs import services
from runs.choices import RUN_TERMINAL, STEP_TERMINAL, RunStatus, Trigger
from runs.models import Run
from workflows.models import Workflow

POLL_SECONDS = 0.2


class Command(BaseCommand):
    help = "Start a run of a workflow's latest published version; with --wait, follow it to the end."

    def add_arguments(self, parser):
        parser.add_argument("target", help="<project slug>/<workflow slug>")
        parser.add_argument("--inputs", default="{}", help="JSON object of inputs.")
        parser.add_argument(
            "--wait", action="store_true", help="Print each step as it finishes; exit 1 if the run fails."
        )
        parser.add_argument("--timeout", type=float, default=600, help="Seconds to wait at most (with --wait).")

    def handle(self, *args, target, inputs, wait, timeout, **options):
        workflow = self._workflow(target)
        try:
            run, _ = services.run_start(workflow=workflow, inputs=self._inputs(inputs), trigger=Trigger.CLI)
        except ValidationError as exc:
            raise CommandError(f"Refused: {exc.message_dict if hasattr(exc, 'error_dict') else exc.messages}") from exc
        except PolicyRefused as exc:
            raise CommandError(f"Refused by policy {exc.policy.name!r}: {exc.reason}") from exc
        self.stdout.write(f"run {run.pk} queued")
        if wait:
            self._follow(run, timeout)

    @staticmethod
    def _workflow(target: str) -> Workflow:
        project_slug, _, workflow_slug = target.partition("/")
        workflow = Workflow.objects.filter(project__slug=project_slug, slug=workflow_slug).first()
        if workflow is None:
            raise CommandError(f"No workflow {target!r}; give <project slug>/<workflow slug>.")
        return workflow

    @staticmethod
    def _inputs(raw: str) -> dict:
        try:
            inputs = json.loads(raw)
        except ValueError as exc:
            raise CommandError(f"--inputs is not JSON: {exc}") from exc
        if not isinstance(inputs, dict):
            raise CommandError("--inputs must be a JSON object.")
        return inputs

    def _follow(self, run: Run, timeout: float) -> None:
        reported, deadline = set(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            run.refresh_from_db()
            for step in run.steps.filter(status__in=STEP_TERMINAL).exclude(key__in=reported).order_by("finished_at"):
                reported.add(step.key)
                tokens = f"{step.input_tokens}+{step.output_tokens} tokens"
                self.stdout.write(f"  {step.key}: {step.status} ({tokens}, ${step.cost_usd})")
            if run.status in RUN_TERMINAL:
                self._finish(run)
                return
            time.sleep(POLL_SECONDS)
        raise CommandError(f"run {run.pk} still {run.status} after {timeout:g}s")

    def _finish(self, run: Run) -> None:
        tokens = f"{run.input_tokens}+{run.output_tokens} tokens"
        self.stdout.write(f"run {run.pk} {run.status}: ${run.cost_usd}, {tokens}")
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"run {run.status}: {run.error.get('message', '')}")
