"""Run-level policies: may a run start now (rate limits, exhausted budgets), and may a queued run
take a slot (concurrency limits). The kinds judged at each stage are the registry's
(policies/kinds/). What a judge needs to know about runs comes in the question, built by runs
(runs/engine/admission.py, which also moves the run and logs its events); the decisions are written
here. Call-level policies are in services.call_verdict."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from . import kinds
from .choices import Outcome, PolicyAction, Stage
from .exceptions import PolicyRefused
from .kinds.base import Admission, Contender, Slot
from .models import Policy, PolicyDecision
from .selectors import policies_for
from .services import decision_record, lock_scopes
from .signals import admission_refused


@dataclass
class AdmissionWarning:
    policy: Policy
    reason: str


def run_policies(project_id) -> list[Policy]:
    """The enabled policies a new run of the project answers to, in one read: those judged when it
    is started (admission_judge) and the concurrency limits it may have to wait on (slot_judge)."""
    return policies_for(project_id, (*kinds.at(kinds.ADMISSION), *kinds.at(kinds.SLOT)))


def has_slot_limits(policies: list[Policy]) -> bool:
    """Whether any of ``policies`` (e.g. run_policies) is a concurrency limit a run may wait on."""
    return any(policy.kind in kinds.at(kinds.SLOT) for policy in policies)


def admission_judge(*, admission: Admission, policies: list[Policy] | None = None) -> list[AdmissionWarning]:
    """Raise PolicyRefused when a blocking policy refuses the run; return the warnings to record
    once the run exists. Call inside the transaction that creates the run: the limits stay
    locked (lock_scopes) until it commits, so two starts at once cannot both take a rate limit's last run.
    ``policies``: the project's policies as already read (run_policies); those of other stages are
    left alone."""
    if policies is None:
        policies = policies_for(admission.project_id, kinds.at(kinds.ADMISSION))
    policies = [policy for policy in policies if policy.kind in kinds.at(kinds.ADMISSION)]
    if not policies:
        return []
    lock_scopes(policies, project_id=admission.project_id)
    warnings = []
    for policy in policies:
        objection = kinds.get(policy.kind).judge(policy, admission)
        if objection is None:
            continue
        if policy.action == PolicyAction.BLOCK:
            raise PolicyRefused(
                policy, objection.reason, status_code=objection.status_code, retry_after=objection.retry_after
            )
        if policy.action == PolicyAction.WARN:
            warnings.append(AdmissionWarning(policy, objection.reason))
    return warnings


REFUSAL_RECORD_INTERVAL = timedelta(seconds=10)


def refusal_record(*, project_id, refusal: PolicyRefused) -> None:
    """Called once the refused run's transaction has rolled back, so the decision stays. A client
    retrying against a 429 in a loop is recorded once per policy every 10 seconds, not per try."""
    recent = PolicyDecision.objects.filter(
        policy=refusal.policy,
        project_id=project_id,
        stage=Stage.ADMISSION,
        outcome=Outcome.BLOCKED,
        created_at__gte=timezone.now() - REFUSAL_RECORD_INTERVAL,
    )
    if not recent.exists():
        with transaction.atomic():
            admission_decision_record(
                project_id=project_id,
                run_id=None,
                policy=refusal.policy,
                outcome=Outcome.BLOCKED,
                reason=refusal.reason,
            )
            admission_refused.send(sender=Policy, project_id=project_id, policy=refusal.policy, reason=refusal.reason)


def admission_decision_record(*, project_id, run_id, policy: Policy, outcome: str, reason: str) -> None:
    """A run-level decision: a warned or refused start, a run held for (or warned at) a slot."""
    decision_record(
        policy=policy, project_id=project_id, run_id=run_id, stage=Stage.ADMISSION, outcome=outcome, reason=reason
    )


# ------------------------------------------------------------------------------
# Concurrency: slots for queued runs, in queue order
# ------------------------------------------------------------------------------
@dataclass
class SlotVerdict:
    #: Every limit over the run with no slot for it now, highest priority first, with its reason.
    full: list[tuple[Policy, str]] = field(default_factory=list)

    @property
    def blocking(self) -> tuple[Policy, str] | None:
        return next(((policy, reason) for policy, reason in self.full if policy.action == PolicyAction.BLOCK), None)


def slot_policies(project_id) -> list[Policy]:
    """The enabled concurrency limits over a project's runs (judged at the slot stage)."""
    return policies_for(project_id, kinds.at(kinds.SLOT))


def slot_judge(
    *, project_id, run_id, contenders: Callable[[bool], list[Contender]], policies: list[Policy] | None = None
) -> SlotVerdict | None:
    """Whether a queued run may start now under every limit judged at the slot stage; None when
    none applies. ``contenders(with_agents)``: the project's runs that hold a slot or wait for one
    (the agents their workflows run only when asked). Call inside the advance's transaction: the
    limits stay locked (lock_scopes) until it commits, so two advances cannot both give the last
    slot away. ``policies``: the project's slot_policies as already read (a worker's catalog)."""
    policies = slot_policies(project_id) if policies is None else policies
    if not policies:
        return None
    lock_scopes(policies, project_id=project_id)
    rows = contenders(any(kinds.get(policy.kind).needs_agents(policy) for policy in policies))
    mine = next((row for row in rows if row.pk == run_id), None)
    if mine is None:
        return SlotVerdict()
    slot = Slot(mine, rows)
    return SlotVerdict(
        [(policy, objection.reason) for policy in policies if (objection := kinds.get(policy.kind).judge(policy, slot))]
    )


def slot_limits_locked(project_id, policies: list[Policy] | None = None) -> bool:
    """Lock the project's slot limits (lock_scopes) for the rest of the transaction; False, and
    nothing locked, when it has none. ``policies``: its slot_policies as already read."""
    policies = slot_policies(project_id) if policies is None else policies
    if policies:
        lock_scopes(policies, project_id=project_id)
    return bool(policies)
