"""Run services: start (validation, pinning, idempotency), cancel, retry from failure, approval
decisions and agent tasks. Tests that need the engine to move run it inline (``engine``); the
others use the plain ``db`` fixture, where nothing is enqueued (on_commit never fires)."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from policies.choices import PolicyKind
from policies.tests.factories import PolicyFactory
from runs import services
from runs.choices import EventType, RunStatus, StepStatus, Trigger
from runs.engine import core
from runs.engine.transitions import TransitionRefused
from runs.models import Approval, Run, RunEvent, RunStep
from sparkops.roles import Role
from workflows import services as workflow_services
from workflows.models import Workflow

from .factories import (
    EXPR_SCHEMA,
    agent_step,
    approval_step,
    bare_run,
    condition_step,
    event_types,
    events,
    llm_calls,
    make_catalog,
    make_workflow,
    start,
    statuses,
    step_of,
    tool_step,
)


@pytest.fixture
def catalog(team):
    return make_catalog(team.project)


@pytest.fixture
def workflow(catalog) -> Workflow:
    return make_workflow(catalog.project)


EXPR_LAST_SCHEMA = {
    "type": "object",
    "properties": {"expr": {"type": "string"}, "last": {"type": "string"}},
    "required": ["expr", "last"],
}


def reload(run: Run) -> Run:
    run.refresh_from_db()
    return run


# ------------------------------------------------------------------------------
# run_start
# ------------------------------------------------------------------------------
def test_run_start_writes_the_run_its_steps_with_the_first_queued_and_their_events(
    workflow, team, django_capture_on_commit_callbacks
):
    user = team.members[Role.DEVELOPER]

    with django_capture_on_commit_callbacks() as sent:
        run, created = services.run_start(workflow=workflow, inputs={"name": "Ada"}, user=user, title="T", priority=3)

    assert created is True
    run = reload(run)
    assert (run.status, run.trigger, run.created_by, run.title, run.priority) == ("queued", "api", user, "T", 3)
    assert run.workflow_version == workflow.versions.get(number=1)
    assert run.project_id == workflow.project_id
    steps = list(run.steps.order_by("position").values_list("key", "kind", "position", "status", "max_attempts"))
    # No concurrency limit applies: the first step is queued as the run is written, as its first
    # advance would have queued it, with a dispatch lease for the reaper.
    assert steps == [("a", "agent", 0, "queued", 3), ("b", "agent", 1, "pending", 3)]
    first = step_of(run, "a")
    assert first.queued_at is not None
    assert first.lease_expires_at == first.queued_at + core.DISPATCH_GRACE
    assert [(e.sequence, e.type, e.step_id) for e in run.events.order_by("sequence")] == [
        (1, EventType.RUN_QUEUED, None),
        (2, EventType.STEP_QUEUED, first.pk),
    ]
    assert run.event_seq == 2
    assert events(run, EventType.RUN_QUEUED)[0].payload == {"trigger": "api", "version": 1}
    assert len(sent) == 1  # the step's message, sent on commit; no advance


def test_a_new_run_with_several_first_steps_queues_them_all(catalog, team):
    flow = make_workflow(catalog.project, agent_step("a"), agent_step("b"), agent_step("c", depends_on=["a", "b"]))

    run, _ = services.run_start(workflow=flow, inputs={"name": "Ada"}, user=team.members[Role.DEVELOPER])

    run = reload(run)
    assert dict(run.steps.values_list("key", "status")) == {"a": "queued", "b": "queued", "c": "pending"}
    assert event_types(run) == [EventType.RUN_QUEUED, EventType.STEP_QUEUED, EventType.STEP_QUEUED]


def test_under_a_concurrency_limit_a_new_run_queues_nothing_and_its_first_advance_decides(
    workflow, team, django_capture_on_commit_callbacks
):
    PolicyFactory(project=workflow.project, kind=PolicyKind.CONCURRENCY, config={"max_active": 2})

    with django_capture_on_commit_callbacks() as sent:
        run, _ = services.run_start(workflow=workflow, inputs={"name": "Ada"}, user=team.members[Role.DEVELOPER])

    run = reload(run)
    assert set(run.steps.values_list("status", flat=True)) == {StepStatus.PENDING}
    assert event_types(run) == [EventType.RUN_QUEUED]
    assert reload(run).event_seq == 1
    assert len(sent) == 1  # the advance, which asks the limit for a slot


def test_run_start_takes_each_steps_retry_attempts_from_the_definition(catalog):
    workflow = make_workflow(catalog.project, agent_step("a", retry={"attempts": 7}))
    assert step_of(start(workflow), "a").max_attempts == 7


def test_run_start_enqueues_the_advance_only_on_commit(workflow, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        services.run_start(workflow=workflow, inputs={"name": "Ada"})
    assert len(callbacks) == 1


@pytest.mark.parametrize("inputs", [{}, {"name": 3}, {"name": ["x"]}])
def test_run_start_refuses_inputs_that_do_not_match_the_schema_and_writes_nothing(workflow, inputs):
    with pytest.raises(ValidationError) as caught:
        services.run_start(workflow=workflow, inputs=inputs)

    assert list(caught.value.message_dict) == ["inputs"]
    assert (Run.objects.count(), RunStep.objects.count(), RunEvent.objects.count()) == (0, 0, 0)


def test_run_start_refuses_a_workflow_with_no_published_version(catalog):
    workflow = make_workflow(catalog.project, publish=False)

    with pytest.raises(ValidationError) as caught:
        services.run_start(workflow=workflow, inputs={"name": "Ada"})

    assert "version" in caught.value.message_dict
    assert not Run.objects.exists()


def test_run_start_refuses_an_unpublished_version_and_pins_the_latest_published_one(workflow):
    workflow_services.workflow_update(workflow=workflow, user=None, definition={"steps": [agent_step("only")]})
    draft = workflow.versions.get(number=2)

    with pytest.raises(ValidationError) as caught:
        services.run_start(workflow=workflow, version=draft, inputs={"name": "Ada"})
    assert "version" in caught.value.message_dict

    run = start(workflow)
    assert run.workflow_version.number == 1
    assert set(statuses(run)) == {"a", "b"}


def test_run_start_refuses_an_inactive_workflow(workflow):
    Workflow.objects.filter(pk=workflow.pk).update(active=False)
    workflow.refresh_from_db()

    with pytest.raises(ValidationError) as caught:
        services.run_start(workflow=workflow, inputs={"name": "Ada"})

    assert "workflow" in caught.value.message_dict
    assert not Run.objects.exists()


def test_run_start_refuses_a_version_of_another_workflow(workflow, catalog):
    other = make_workflow(catalog.project, slug="other")

    with pytest.raises(ValidationError) as caught:
        services.run_start(workflow=workflow, version=other.versions.get(), inputs={"name": "Ada"})

    assert "version" in caught.value.message_dict
    assert not Run.objects.exists()


def test_run_start_returns_the_first_run_for_a_repeated_idempotency_key(workflow):
    first, created = services.run_start(workflow=workflow, inputs={"name": "Ada"}, idempotency_key="k-1")
    again, created_again = services.run_start(workflow=workflow, inputs={"name": "Ada"}, idempotency_key="k-1")

    assert (created, created_again) == (True, False)
    assert again.pk == first.pk
    assert Run.objects.count() == 1


def test_run_start_refuses_a_reused_idempotency_key_with_different_inputs(workflow):
    first, _ = services.run_start(workflow=workflow, inputs={"name": "Ada"}, idempotency_key="k-1")

    with pytest.raises(services.IdempotencyKeyReused) as caught:
        services.run_start(workflow=workflow, inputs={"name": "Bob"}, idempotency_key="k-1")

    assert caught.value.run == first
    assert Run.objects.count() == 1
    assert reload(first).inputs == {"name": "Ada"}


def test_a_run_stored_before_fingerprints_replays_for_any_request(workflow):
    first, _ = services.run_start(workflow=workflow, inputs={"name": "Ada"}, idempotency_key="k-1")
    Run.objects.filter(pk=first.pk).update(request_fingerprint="")

    again, created = services.run_start(workflow=workflow, inputs={"name": "Bob"}, idempotency_key="k-1")

    assert (again.pk, created) == (first.pk, False)


def test_an_idempotency_key_is_per_project(workflow, team):
    make_catalog(team.other_project)
    elsewhere = make_workflow(team.other_project)

    one, _ = services.run_start(workflow=workflow, inputs={"name": "Ada"}, idempotency_key="k")
    two, created = services.run_start(workflow=elsewhere, inputs={"name": "Ada"}, idempotency_key="k")

    assert created is True
    assert one.pk != two.pk


# ------------------------------------------------------------------------------
# run_cancel
# ------------------------------------------------------------------------------
def test_cancelling_a_queued_run_cancels_it_and_its_pending_steps(engine, workflow):
    run = bare_run(workflow)

    services.run_cancel(run=run)

    run = reload(run)
    assert run.status == RunStatus.CANCELLED
    assert run.finished_at is not None
    assert set(statuses(run).values()) == {StepStatus.CANCELLED}
    types = event_types(run)
    assert types[0] == EventType.RUN_CANCELLING
    assert types[-1] == EventType.RUN_CANCELLED
    assert types.count(EventType.STEP_CANCELLED) == 2


def test_cancelling_a_running_run_cancels_what_has_not_started(engine, workflow):
    run = bare_run(workflow, status=RunStatus.RUNNING)
    RunStep.objects.filter(run=run, key="a").update(status=StepStatus.QUEUED)

    services.run_cancel(run=run)

    assert reload(run).status == RunStatus.CANCELLED
    assert statuses(run) == {"a": StepStatus.CANCELLED, "b": StepStatus.CANCELLED}
    assert llm_calls(run, "a") == 0


@pytest.fixture
def waiting(engine, catalog) -> Run:
    """a ran (and spent tokens), then the run parked at a gate before b."""
    workflow = make_workflow(
        catalog.project, agent_step("a"), approval_step("gate", depends_on=["a"]), agent_step("b", depends_on=["gate"])
    )
    return start(workflow)


def test_cancelling_a_waiting_run_keeps_the_tokens_already_spent(waiting):
    spent = step_of(waiting, "a")
    assert spent.input_tokens > 0
    assert waiting.status == RunStatus.WAITING_APPROVAL

    services.run_cancel(run=waiting)

    run = reload(waiting)
    assert run.status == RunStatus.CANCELLED
    assert statuses(run) == {"a": StepStatus.SUCCEEDED, "gate": StepStatus.CANCELLED, "b": StepStatus.CANCELLED}
    assert (run.input_tokens, run.output_tokens, run.cost_usd) == (
        spent.input_tokens,
        spent.output_tokens,
        spent.cost_usd,
    )
    assert run.cost_usd > 0


def test_cancelling_twice_is_harmless(waiting):
    services.run_cancel(run=waiting)
    services.run_cancel(run=reload(waiting))
    services.run_cancel(run=waiting)  # a stale copy, still "cancelling" in memory

    assert reload(waiting).status == RunStatus.CANCELLED
    assert event_types(waiting).count(EventType.RUN_CANCELLING) == 1
    assert event_types(waiting).count(EventType.RUN_CANCELLED) == 1


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.FAILED])
def test_cancelling_a_finished_run_is_refused(workflow, status):
    run = bare_run(workflow, status=status)

    with pytest.raises(TransitionRefused):
        services.run_cancel(run=run)

    assert reload(run).status == status
    assert not RunEvent.objects.filter(run=run).exists()


# ------------------------------------------------------------------------------
# run_retry
# ------------------------------------------------------------------------------
@pytest.fixture
def failed(engine, catalog) -> Run:
    """a (agent) succeeded, calc (tool) failed on 1/0, c never ran."""
    workflow = make_workflow(
        catalog.project,
        agent_step("a", prompt="Start {{ inputs.expr }}"),
        tool_step("calc", depends_on=["a"]),
        agent_step("c", prompt="Result {{ steps.calc.output }}", depends_on=["calc"]),
        schema=EXPR_SCHEMA,
    )
    run = reload(start(workflow, {"expr": "1/0"}))
    assert run.status == RunStatus.FAILED
    return run


def test_retry_reuses_succeeded_steps_whose_input_is_unchanged_and_runs_the_failed_one_again(engine, catalog, team):
    workflow = make_workflow(
        catalog.project,
        agent_step("a", prompt="Start"),
        tool_step("calc", depends_on=["a"]),
        agent_step("c", prompt="Result {{ steps.calc.output }}", depends_on=["calc"]),
        schema=EXPR_SCHEMA,
    )
    failed = reload(start(workflow, {"expr": "1/0"}))
    user = team.members[Role.DEVELOPER]

    retry = reload(services.run_retry(run=failed, user=user, inputs={"expr": "6*7"})[0])

    assert (retry.trigger, retry.parent, retry.workflow_version, retry.created_by) == (
        Trigger.RETRY,
        failed,
        failed.workflow_version,
        user,
    )
    assert retry.status == RunStatus.SUCCEEDED
    assert retry.inputs == {"expr": "6*7"}
    a, old_a = step_of(retry, "a"), step_of(failed, "a")
    assert (a.status, a.reused_from, a.output) == (StepStatus.SUCCEEDED, old_a, old_a.output)
    assert a.plan_reason == "same input, and every step it depends on is reused"
    assert llm_calls(retry, "a") == 0
    assert events(retry, EventType.STEP_REUSED)[0].step == a
    calc = step_of(retry, "calc")
    assert (calc.status, calc.output, calc.attempt, calc.reused_from) == (StepStatus.SUCCEEDED, 42, 1, None)
    assert calc.plan_reason == "it was failed in the run replayed"
    assert retry.outputs["c"] == "echo: Result 42"
    assert llm_calls(retry, "c") == 1
    # The failed run is left as it was.
    assert reload(failed).status == RunStatus.FAILED
    assert step_of(failed, "calc").status == StepStatus.FAILED


def test_retry_with_new_inputs_runs_again_the_steps_that_read_them(failed):
    """A step whose rendered input changed is not reused, and neither is what depends on it."""
    retry = reload(services.run_retry(run=failed, inputs={"expr": "6*7"})[0])

    assert retry.status == RunStatus.SUCCEEDED
    assert step_of(retry, "a").reused_from is None
    assert step_of(retry, "a").plan_reason == "its input changed"
    assert step_of(retry, "a").output == "echo: Start 6*7"
    assert llm_calls(retry, "a") == 1


def test_retry_with_new_inputs_never_keeps_an_output_computed_from_the_old_ones(engine, catalog):
    """n = {{ inputs.expr }} kept 18 from 6*3 after a retry with 100*2, and m computed from it."""
    workflow = make_workflow(
        catalog.project,
        tool_step("n"),
        tool_step("m", "{{ steps.n.output }} + 1", depends_on=["n"]),
        tool_step("last", "{{ inputs.last }}", depends_on=["m"]),
        schema=EXPR_LAST_SCHEMA,
    )
    failed = reload(start(workflow, {"expr": "6*3", "last": "1/0"}))
    assert (step_of(failed, "n").output, step_of(failed, "m").output) == (18, 19)

    retry = reload(services.run_retry(run=failed, inputs={"expr": "100*2", "last": "1"})[0])

    assert retry.status == RunStatus.SUCCEEDED
    assert (step_of(retry, "n").output, step_of(retry, "m").output) == (200, 201)
    assert step_of(retry, "n").plan_reason == "its input changed"
    assert step_of(retry, "m").plan_reason == "it depends on 'n', which runs again"
    assert not events(retry, EventType.STEP_REUSED)


def test_retry_keeps_the_branch_a_reused_condition_ruled_out_skipped(engine, catalog):
    workflow = make_workflow(
        catalog.project,
        tool_step("n"),
        condition_step("check", "{{ steps.n.output }}", ">", 10, then=["big"], otherwise=["small"], depends_on=["n"]),
        agent_step("big", prompt="big"),
        agent_step("small", prompt="small"),
        tool_step("last", "{{ inputs.last }}", depends_on=["big"]),
        schema=EXPR_LAST_SCHEMA,
    )
    failed = reload(start(workflow, {"expr": "6*3", "last": "1/0"}))
    assert (failed.status, step_of(failed, "small").status) == (RunStatus.FAILED, StepStatus.SKIPPED)

    retry = reload(services.run_retry(run=failed, inputs={"expr": "6*3", "last": "1"})[0])

    assert retry.status == RunStatus.SUCCEEDED
    assert statuses(retry) == {
        "n": StepStatus.SUCCEEDED,
        "check": StepStatus.SUCCEEDED,
        "big": StepStatus.SUCCEEDED,
        "small": StepStatus.SKIPPED,
        "last": StepStatus.SUCCEEDED,
    }
    assert llm_calls(retry, "small") == 0
    assert llm_calls(retry, "big") == 0
    assert "small" not in retry.outputs


def test_retry_keeps_the_failed_runs_inputs_by_default(failed):
    retry = reload(services.run_retry(run=failed)[0])

    assert retry.inputs == {"expr": "1/0"}
    assert retry.status == RunStatus.FAILED
    assert step_of(retry, "a").reused_from == step_of(failed, "a")


def test_retry_of_a_succeeded_run_is_refused(engine, workflow):
    run = start(workflow)
    assert run.status == RunStatus.SUCCEEDED

    with pytest.raises(TransitionRefused):
        services.run_retry(run=run)

    assert Run.objects.count() == 1


def test_retry_with_inputs_that_do_not_match_the_schema_is_refused(failed):
    with pytest.raises(ValidationError) as caught:
        services.run_retry(run=failed, inputs={"expr": 5})

    assert "inputs" in caught.value.message_dict
    assert Run.objects.count() == 1


def test_a_cancelled_run_can_be_retried(waiting):
    services.run_cancel(run=waiting)
    retry, _ = services.run_retry(run=reload(waiting))

    retry = reload(retry)
    assert retry.status == RunStatus.WAITING_APPROVAL
    assert retry.parent == waiting
    assert step_of(retry, "a").reused_from == step_of(waiting, "a")
    assert llm_calls(retry, "a") == 0


# ------------------------------------------------------------------------------
# step_decide
# ------------------------------------------------------------------------------
def parked(workflow_project, role: str | None = None) -> Run:
    """A run whose gate is waiting for a decision (rows set by hand; nothing is enqueued)."""
    extra = {"role": role} if role else {}
    run = start(make_workflow(workflow_project, approval_step("gate", **extra), slug="gated"))
    RunStep.objects.filter(run=run, key="gate").update(status=StepStatus.WAITING_APPROVAL)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.WAITING_APPROVAL)
    return reload(run)


@pytest.mark.parametrize(
    ("step_role", "role", "allowed"),
    [
        (None, Role.DEVELOPER, False),  # the default is admin
        (None, Role.ADMIN, True),
        (Role.DEVELOPER, Role.DEVELOPER, True),
        (Role.DEVELOPER, Role.VIEWER, False),
        (Role.OWNER, Role.ADMIN, False),
        (Role.OWNER, Role.OWNER, True),
    ],
)
def test_a_decision_needs_the_role_the_step_names(catalog, team, step_role, role, allowed):
    run = parked(catalog.project, step_role)
    decide = {"run": run, "key": "gate", "user": team.members[role], "role": role, "decision": "approved"}

    if allowed:
        services.step_decide(**decide)
        assert step_of(run, "gate").status == StepStatus.SUCCEEDED
    else:
        with pytest.raises(PermissionDenied):
            services.step_decide(**decide)
        assert step_of(run, "gate").status == StepStatus.WAITING_APPROVAL
        assert not Approval.objects.exists()


def test_a_decision_on_a_step_that_is_not_waiting_is_refused(catalog, team):
    run = parked(catalog.project)
    RunStep.objects.filter(run=run, key="gate").update(status=StepStatus.PENDING)

    with pytest.raises(TransitionRefused):
        services.step_decide(run=run, key="gate", user=team.members["owner"], role="owner", decision="approved")

    assert not Approval.objects.exists()


def test_a_decision_on_an_unknown_step_is_invalid(catalog, team):
    run = parked(catalog.project)

    with pytest.raises(ValidationError):
        services.step_decide(run=run, key="nope", user=team.members["owner"], role="owner", decision="approved")


def test_a_rejection_records_who_and_why(catalog, team):
    run = parked(catalog.project)
    owner = team.members[Role.OWNER]

    step = services.step_decide(run=run, key="gate", user=owner, role="owner", decision="rejected", comment="risky")

    step.refresh_from_db()
    assert step.status == StepStatus.FAILED
    assert step.error == {"type": "Rejected", "message": f"Rejected by {owner.email}: risky", "permanent": True}
    assert Approval.objects.get(step=step).decided_by == owner
    assert events(run, EventType.STEP_REJECTED)[0].payload["comment"] == "risky"
