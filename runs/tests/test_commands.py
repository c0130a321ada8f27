"""``run_workflow <project>/<workflow> --inputs '{...}' --wait``: start a run from the shell and
follow it. The engine runs inline, so the run has finished when the command starts following it."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from runs.choices import RunStatus, Trigger
from runs.models import Run

from .factories import EXPR_SCHEMA, agent_step, make_catalog, make_workflow, tool_step


@pytest.fixture
def workflow(team):
    make_catalog(team.project)
    return make_workflow(
        team.project,
        tool_step("calc", "{{ inputs.expr }}"),
        agent_step("say", prompt="Got {{ steps.calc.output }}", depends_on=["calc"]),
        slug="maths",
        schema=EXPR_SCHEMA,
    )


def run_workflow(*args: str) -> str:
    out = StringIO()
    call_command("run_workflow", *args, stdout=out)
    return out.getvalue()


def test_it_runs_a_workflow_and_prints_each_step(engine, team, workflow):
    output = run_workflow(f"{team.project.slug}/maths", "--inputs", '{"expr": "6*7"}', "--wait")

    run = Run.objects.get()
    assert (run.status, run.trigger, run.inputs, run.created_by) == (
        RunStatus.SUCCEEDED,
        Trigger.CLI,
        {"expr": "6*7"},
        None,
    )
    lines = output.splitlines()
    assert lines[0] == f"run {run.pk} queued"
    assert lines[1].startswith("  calc: succeeded (0+0 tokens")
    say = run.steps.get(key="say")
    assert lines[2] == f"  say: succeeded ({say.input_tokens}+{say.output_tokens} tokens, ${say.cost_usd})"
    assert lines[3] == f"run {run.pk} succeeded: ${run.cost_usd}, {run.input_tokens}+{run.output_tokens} tokens"


def test_without_wait_it_only_starts_the_run(engine, team, workflow):
    output = run_workflow(f"{team.project.slug}/maths", "--inputs", '{"expr": "1"}')
    assert output == f"run {Run.objects.get().pk} queued\n"


def test_a_failing_run_is_a_command_error(engine, team, workflow):
    with pytest.raises(CommandError, match="run failed"):
        run_workflow(f"{team.project.slug}/maths", "--inputs", '{"expr": "1/0"}', "--wait")
    assert Run.objects.get().status == RunStatus.FAILED


@pytest.mark.parametrize(
    ("inputs", "message"),
    [("{nope", "not JSON"), ("[1]", "must be a JSON object"), ('{"expr": 1}', "Refused")],
)
def test_bad_inputs_are_a_command_error_and_start_nothing(team, workflow, inputs, message):
    with pytest.raises(CommandError, match=message):
        run_workflow(f"{team.project.slug}/maths", "--inputs", inputs)
    assert not Run.objects.exists()


@pytest.mark.parametrize("target", ["nope/maths", "{project}/nope", "maths"])
def test_an_unknown_workflow_is_a_command_error(team, workflow, target):
    with pytest.raises(CommandError, match="No workflow"):
        run_workflow(target.format(project=team.project.slug))
    assert not Run.objects.exists()
