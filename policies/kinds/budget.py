"""A budget: dollars per calendar or rolling window, for the project or narrowed to an agent, a
model or a workflow. At admission an exhausted budget refuses runs it covers whole; before each
provider call it is checked and the call's estimated maximum cost reserved."""

from zoneinfo import available_timezones

from django.utils import timezone

from .. import totals
from ..choices import PolicyKind, Window
from ..money import config_usd, usd
from ..selectors import budget_covers, budget_use
from ..windows import window_at
from .base import _SLUG, _USD, ADMISSION, CALL, Admission, Call, Objection, PolicyKindBase


class Budget(PolicyKindBase):
    name = PolicyKind.BUDGET.value
    label = "Budget"
    schema = {
        "type": "object",
        "properties": {
            "amount_usd": _USD,
            "window": {"enum": list(Window.values)},
            "days": {"type": "integer", "minimum": 1, "maximum": 366},
            "timezone": {"type": "string"},
            "agent": _SLUG,
            "model": {"type": "string", "minLength": 1, "maxLength": 140},
            "workflow": _SLUG,
        },
        "required": ["amount_usd", "window"],
        "additionalProperties": False,
    }
    example = {"amount_usd": 25, "window": "day", "timezone": "Europe/Berlin"}
    stages = frozenset({ADMISSION, CALL})
    reserves = True

    def extra_errors(self, config: dict) -> list[str]:
        errors = []
        if config["window"] == Window.ROLLING and "days" not in config:
            errors.append('days: a rolling window needs its length in days, e.g. {"window": "rolling", "days": 7}.')
        if config["window"] != Window.ROLLING and "days" in config:
            errors.append("days: only a rolling window takes days.")
        if config.get("timezone", "UTC") not in _timezones():
            errors.append(f"timezone: {config['timezone']!r} is not an IANA timezone, e.g. Europe/Berlin.")
        return errors

    def judge(self, policy, question) -> Objection | None:
        if question.stage == ADMISSION:
            return self._at_admission(policy, question)
        return self._before_call(policy, question)

    def _at_admission(self, policy, admission: Admission) -> Objection | None:
        # Budgets narrowed to an agent or a model are kept call by call: this run may not use them.
        config = policy.config
        if config.get("agent") or config.get("model"):
            return None
        if config.get("workflow", admission.workflow_slug) != admission.workflow_slug:
            return None
        status = totals.status(policy, admission.project_id)
        if not status.exhausted:
            return None
        return Objection(
            f"Budget {policy.name!r} is exhausted: ${usd(status.spent + status.reserved)} of ${usd(status.amount)} "
            f"used until {status.window_end:%Y-%m-%d %H:%M} UTC."
        )

    def _before_call(self, policy, call: Call) -> Objection | None:
        amount = config_usd(policy.config, "amount_usd")
        if policy.pk in call.budget_uses:  # its running total, read under its lock (policies.totals)
            span, use = call.budget_uses[policy.pk]
        else:  # a rolling window: summed from the ledger, under the policy's lock
            span = window_at(policy.config, timezone.now())
            use = budget_use(policy, call.project_id, span)
            call.budget_uses[policy.pk] = (span, use)
        if use.total + call.estimate_usd <= amount:
            return None
        return Objection(
            f"Budget {policy.name!r}: ${usd(use.total)} of ${usd(amount)} used or reserved until "
            f"{span.end:%Y-%m-%d %H:%M} UTC; this call may cost ${usd(call.estimate_usd)}."
        )

    def covers(self, policy, call: Call) -> bool:
        return budget_covers(
            policy.config,
            agent_slug=call.agent.slug,
            provider=call.provider,
            model=call.model,
            workflow_slug=call.workflow_slug,
        )

    def keeps_dollars(self, policy) -> bool:
        return True

    def subject(self, policy, call: Call) -> str:
        return "spend"


_TIMEZONES: set[str] = set()


def _timezones() -> set[str]:
    if not _TIMEZONES:
        _TIMEZONES.update(available_timezones() | {"UTC"})
    return _TIMEZONES
