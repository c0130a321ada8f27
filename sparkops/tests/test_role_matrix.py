"""The role matrix: every write endpoint of the API, each caller, exactly what README's role tables say.

The endpoints come from the OpenAPI schema, so a new write endpoint without an entry here fails
``test_every_write_endpoint_has_a_matrix_entry``. Each caller is a member of each role, an
outsider (a member of another project only) and an API key (role admin, made by the owner).
An allowed caller gets a 2xx, or a 4xx about the request that is neither 403 nor 404 (e.g. 409
for a state the object is not in); a refused member gets 403; an outsider gets 404 (or, for a
body naming the project, 400 saying the project does not exist); a refused key gets 403.
The Django admin's actions are at the end of the module: each needs its model permission and, for
staff who are not superusers, the same least role in the row's project.
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from drf_spectacular.generators import SchemaGenerator

from accounts.tests.factories import ApiKeyFactory, UserFactory
from agents.tests.factories import CredentialFactory
from policies.tests.factories import PolicyFactory
from projects.models import Project
from projects.tests.factories import MembershipFactory
from runs.choices import RunStatus, StepStatus
from runs.models import Run, RunStep
from runs.tests.factories import approval_step, echo_agent, make_catalog, make_workflow, start, tool
from schedules import services as schedule_services
from schedules.freeze import project_freeze
from schedules.models import Schedule
from sparkops.roles import Role
from sparkops.testing import Team, client_for
from webhooks import services as webhook_services
from webhooks.models import Delivery, Endpoint

OWNER, ADMIN, DEVELOPER, VIEWER = Role.OWNER, Role.ADMIN, Role.DEVELOPER, Role.VIEWER
# Least first: an allowed call may change what the next caller finds (the owner deletes the project).
CALLERS = ["outsider", VIEWER, DEVELOPER, "key", ADMIN, OWNER]
KEY_ROLE = ADMIN
OK, DENIED, HIDDEN = "allowed", "403", "404"
ANY_USER = "any user"  # not project-scoped: every signed-in user, outsiders included
#: Not role-gated at all: they act on the caller's own session (tested in accounts).
PUBLIC = {("POST", "/auth/login"), ("POST", "/auth/register"), ("POST", "/auth/refresh"), ("POST", "/auth/logout")}
INPUTS = {"name": "Ada"}
_serial = itertools.count()


def unique(prefix: str) -> str:
    """A fresh slug per call: each caller of an endpoint acts on (and creates) its own rows."""
    return f"{prefix}{next(_serial)}"


@dataclass(frozen=True)
class Op:
    """One write endpoint: the least role it needs, whether an API key may call it, and how to
    build the object it acts on and the body it sends. ``expect`` overrides single callers."""

    needs: str
    make: Callable[[Team], tuple[str, dict | None]]
    keys: bool = True
    expect: dict[str, str] = field(default_factory=dict)

    def expected(self, who: str) -> str:
        if who in self.expect:
            return self.expect[who]
        if who == "key":
            return self.expected(KEY_ROLE) if self.keys else DENIED
        if who == "outsider":
            return OK if self.needs == ANY_USER else HIDDEN
        return OK if self.needs == ANY_USER or Role.at_least(who, self.needs) else DENIED


# ------------------------------------------------------------------------------
# What each endpoint acts on
# ------------------------------------------------------------------------------
def pid(team: Team) -> str:
    return str(team.project.pk)


def catalog(team: Team) -> None:
    """The echo agents writer and helper and the calc tool that workflows here name, once."""
    if not team.project.agents.filter(slug="writer").exists():
        make_catalog(team.project)


def agent(team: Team):
    catalog(team)
    return echo_agent(team.project, unique("agent"))


def workflow(team: Team, *steps, publish: bool = True):
    catalog(team)
    return make_workflow(team.project, *steps, slug=unique("wf"), publish=publish)


def run_in(team: Team, status: str = RunStatus.QUEUED) -> Run:
    run = start(workflow(team))  # nothing is enqueued: the test's transaction never commits
    Run.objects.filter(pk=run.pk).update(status=status)
    return run


def parked_run(team: Team) -> Run:
    """A run waiting at a gate that names admin (the default)."""
    run = start(workflow(team, approval_step("gate")))
    RunStep.objects.filter(run=run, key="gate").update(status=StepStatus.WAITING_APPROVAL)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.WAITING_APPROVAL)
    return run


def schedule(team: Team) -> Schedule:
    wf = workflow(team)
    return schedule_services.schedule_save(
        schedule=Schedule(project=team.project, workflow=wf, name=unique("daily"), cron="0 9 * * *", inputs=INPUTS)
    )


def agent_body(team: Team) -> dict:
    return {"project": pid(team), "name": "Scout", "slug": unique("scout"), "provider": "echo", "model": "echo-1"}


def tool_body(team: Team) -> dict:
    config = {"function": "arithmetic"}
    return {"project": pid(team), "name": "Sum", "slug": unique("sum"), "kind": "builtin", "config": config}


def credential_body(team: Team) -> dict:
    return {"project": pid(team), "name": "Key", "provider": "openai", "secret": "sk-test"}


def policy_body(team: Team) -> dict:
    config = {"amount_usd": 10, "window": "day", "timezone": "UTC"}
    return {"project": pid(team), "name": unique("daily"), "kind": "budget", "config": config, "action": "block"}


def workflow_body(team: Team) -> dict:
    catalog(team)
    definition = {"steps": [{"key": "a", "kind": "agent", "agent": "writer", "prompt": "Hi {{ inputs.name }}"}]}
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    body = {"project": pid(team), "name": "Flow", "slug": unique("flow")}
    return body | {"definition": definition, "input_schema": schema}


def schedule_body(team: Team) -> dict:
    wf = workflow(team)
    name = unique("daily")
    return {"project": pid(team), "workflow": str(wf.pk), "name": name, "cron": "0 9 * * *", "inputs": INPUTS}


# A blocked address: a test message fails at once, recorded, without leaving the machine.
HOOK_URL = "https://127.0.0.1:9/hook"


def webhook_body(team: Team) -> dict:
    return {"project": pid(team), "url": HOOK_URL, "event_types": ["run.failed"], "description": unique("pager")}


def _webhook(t) -> str:
    endpoint, _ = webhook_services.endpoint_create(endpoint=Endpoint(project=t.project, url=HOOK_URL))
    return f"/webhooks/{endpoint.pk}"


def _delivery(t) -> str:
    endpoint, _ = webhook_services.endpoint_create(endpoint=Endpoint(project=t.project, url=HOOK_URL))
    delivery = Delivery.objects.create(endpoint=endpoint, project=t.project, event_type="run.failed", status="failed")
    return f"/webhook-deliveries/{delivery.pk}"


def frozen(team: Team):
    if not Project.objects.filter(pk=team.project.pk, frozen_at__isnull=False).exists():
        project_freeze(project=team.project, reason="incident")
    return team.project


def member(team: Team, role: str = DEVELOPER):
    return MembershipFactory(project=team.project, role=role)


def developers_key(team: Team):
    return ApiKeyFactory(project=team.project, created_by=team.members[DEVELOPER], role=DEVELOPER)


# ------------------------------------------------------------------------------
# The matrix: README "Projects and members", "API keys", the tables of agents, tools,
# credentials, workflows, runs, schedules and policies
# ------------------------------------------------------------------------------
def _agent(t):
    return f"/agents/{agent(t).pk}"


def _tool(t):
    return f"/tools/{tool(t.project, unique('tool')).pk}"


def _task(t):
    """A pending task of the project's writer agent, one per caller."""
    from taskboard.models import Task

    catalog(t)
    return f"/tasks/{Task.objects.create(project=t.project, title='Do it', agent=agent(t)).pk}"


def _sandbox(t):
    from taskboard.models import Sandbox

    return f"/sandboxes/{Sandbox.objects.create(project=t.project, provider='local', external_id='').pk}"


def _tool_put(t):
    """A full body that keeps the slug: renaming a tool is an admin's (README, tool labels)."""
    made = tool(t.project, unique("tool"))
    return f"/tools/{made.pk}", tool_body(t) | {"slug": made.slug}


def _credential(t):
    return f"/credentials/{CredentialFactory(project=t.project).pk}"


def _policy(t):
    return f"/policies/{PolicyFactory(project=t.project).pk}"


def _workflow(t, publish=True):
    return f"/workflows/{workflow(t, publish=publish).pk}"


def _schedule(t):
    return f"/schedules/{schedule(t).pk}"


MATRIX: dict[tuple[str, str], Op] = {
    # Projects and members
    ("POST", "/projects"): Op(ANY_USER, lambda t: ("/projects", {"name": "New"}), keys=False),
    ("PUT", "/projects/{id}"): Op(ADMIN, lambda t: (f"/projects/{t.project.pk}", {"name": "Renamed"})),
    ("PATCH", "/projects/{id}"): Op(ADMIN, lambda t: (f"/projects/{t.project.pk}", {"name": "Renamed"})),
    ("DELETE", "/projects/{id}"): Op(OWNER, lambda t: (f"/projects/{t.project.pk}", None)),
    # Each caller after the first that may freeze finds the project frozen: 409, still "allowed".
    ("POST", "/projects/{id}/freeze"): Op(ADMIN, lambda t: (f"/projects/{t.project.pk}/freeze", {"reason": "x"})),
    ("POST", "/projects/{id}/unfreeze"): Op(ADMIN, lambda t: (f"/projects/{frozen(t).pk}/unfreeze", None)),
    ("POST", "/memberships"): Op(
        ADMIN,
        lambda t: ("/memberships", {"project": pid(t), "email": UserFactory().email, "role": "developer"}),
        keys=False,
    ),
    ("PUT", "/memberships/{id}"): Op(ADMIN, lambda t: (f"/memberships/{member(t).pk}", {"role": "viewer"}), keys=False),
    ("PATCH", "/memberships/{id}"): Op(
        ADMIN, lambda t: (f"/memberships/{member(t).pk}", {"role": "viewer"}), keys=False
    ),
    ("DELETE", "/memberships/{id}"): Op(ADMIN, lambda t: (f"/memberships/{member(t).pk}", None), keys=False),
    # API keys: any member holds keys up to their role; admins see (and revoke) everyone's
    ("POST", "/api-keys"): Op(
        VIEWER, lambda t: ("/api-keys", {"project": pid(t), "name": "ci", "role": "viewer"}), keys=False
    ),
    ("DELETE", "/api-keys/{id}"): Op(
        ADMIN,
        lambda t: (f"/api-keys/{developers_key(t).pk}", None),
        keys=False,
        expect={DEVELOPER: OK, VIEWER: HIDDEN},  # its creator may; a viewer does not see it
    ),
    ("PATCH", "/auth/me"): Op(ANY_USER, lambda t: ("/auth/me", {"name": "New name"}), keys=False),
    # Live stream: a token to open it with grants reading only, so any member may have one
    ("POST", "/sse/token"): Op(VIEWER, lambda t: ("/sse/token", {"projects": [pid(t)]})),
    # Agents, tools, credentials
    ("POST", "/agents"): Op(DEVELOPER, lambda t: ("/agents", agent_body(t))),
    ("PUT", "/agents/{id}"): Op(DEVELOPER, lambda t: (_agent(t), agent_body(t))),
    ("PATCH", "/agents/{id}"): Op(DEVELOPER, lambda t: (_agent(t), {"description": "Writes"})),
    ("DELETE", "/agents/{id}"): Op(DEVELOPER, lambda t: (_agent(t), None)),
    ("POST", "/agents/{id}/health-check"): Op(DEVELOPER, lambda t: (f"{_agent(t)}/health-check", None)),
    ("POST", "/agents/{id}/start-task"): Op(DEVELOPER, lambda t: (f"{_agent(t)}/start-task", {"title": "Do it"})),
    ("POST", "/tools"): Op(DEVELOPER, lambda t: ("/tools", tool_body(t))),
    ("PUT", "/tools/{id}"): Op(DEVELOPER, _tool_put),
    ("PATCH", "/tools/{id}"): Op(DEVELOPER, lambda t: (_tool(t), {"description": "Adds"})),
    ("DELETE", "/tools/{id}"): Op(DEVELOPER, lambda t: (_tool(t), None)),
    ("POST", "/tools/{id}/test"): Op(DEVELOPER, lambda t: (f"{_tool(t)}/test", {"input": {"expression": "1+1"}})),
    ("POST", "/credentials"): Op(ADMIN, lambda t: ("/credentials", credential_body(t))),
    ("PUT", "/credentials/{id}"): Op(ADMIN, lambda t: (_credential(t), credential_body(t))),
    ("PATCH", "/credentials/{id}"): Op(ADMIN, lambda t: (_credential(t), {"name": "Renamed"})),
    ("DELETE", "/credentials/{id}"): Op(ADMIN, lambda t: (_credential(t), None)),
    # Workflows
    ("POST", "/workflows"): Op(DEVELOPER, lambda t: ("/workflows", workflow_body(t))),
    ("PUT", "/workflows/{id}"): Op(DEVELOPER, lambda t: (_workflow(t), workflow_body(t))),
    ("PATCH", "/workflows/{id}"): Op(DEVELOPER, lambda t: (_workflow(t), {"description": "Flows"})),
    ("DELETE", "/workflows/{id}"): Op(DEVELOPER, lambda t: (_workflow(t), None)),
    ("POST", "/workflows/{id}/versions/{number}/publish"): Op(
        DEVELOPER, lambda t: (f"{_workflow(t, publish=False)}/versions/1/publish", None)
    ),
    ("POST", "/workflows/validate"): Op(
        VIEWER, lambda t: ("/workflows/validate", {k: v for k, v in workflow_body(t).items() if k != "slug"})
    ),
    # Runs
    ("POST", "/runs"): Op(DEVELOPER, lambda t: ("/runs", {"workflow": str(workflow(t).pk), "inputs": INPUTS})),
    ("POST", "/workflows/{id}/run"): Op(DEVELOPER, lambda t: (f"{_workflow(t)}/run", {"inputs": INPUTS})),
    ("POST", "/runs/{id}/cancel"): Op(DEVELOPER, lambda t: (f"/runs/{run_in(t).pk}/cancel", None)),
    ("PATCH", "/runs/{id}/cancel"): Op(DEVELOPER, lambda t: (f"/runs/{run_in(t).pk}/cancel", None)),
    ("POST", "/runs/{id}/retry"): Op(DEVELOPER, lambda t: (f"/runs/{run_in(t, RunStatus.FAILED).pk}/retry", {})),
    ("POST", "/runs/{id}/replay"): Op(DEVELOPER, lambda t: (f"/runs/{run_in(t, RunStatus.FAILED).pk}/replay", {})),
    # An estimate writes nothing: whoever reads runs may ask what one would cost.
    ("POST", "/runs/estimate"): Op(
        VIEWER, lambda t: ("/runs/estimate", {"workflow": str(workflow(t).pk), "inputs": INPUTS})
    ),
    # The step's role: this gate names admin. No gate names a role below developer.
    ("POST", "/runs/{id}/steps/{key}/approve"): Op(
        ADMIN, lambda t: (f"/runs/{parked_run(t).pk}/steps/gate/approve", {"comment": "ok"})
    ),
    ("POST", "/runs/{id}/steps/{key}/reject"): Op(
        ADMIN, lambda t: (f"/runs/{parked_run(t).pk}/steps/gate/reject", {"comment": "no"})
    ),
    # Task board: developers give, edit, start and cancel tasks and destroy sandboxes
    ("POST", "/tasks"): Op(DEVELOPER, lambda t: ("/tasks", {"project": pid(t), "title": "Do it"})),
    ("PATCH", "/tasks/{id}"): Op(DEVELOPER, lambda t: (_task(t), {"priority": "high"})),
    ("POST", "/tasks/{id}/start"): Op(DEVELOPER, lambda t: (f"{_task(t)}/start", None)),
    ("POST", "/tasks/{id}/cancel"): Op(DEVELOPER, lambda t: (f"{_task(t)}/cancel", None)),
    ("DELETE", "/sandboxes/{id}"): Op(DEVELOPER, lambda t: (_sandbox(t), None)),
    # Schedules and policies: admins write
    ("POST", "/schedules"): Op(ADMIN, lambda t: ("/schedules", schedule_body(t))),
    ("PUT", "/schedules/{id}"): Op(ADMIN, lambda t: (_schedule(t), schedule_body(t))),
    ("PATCH", "/schedules/{id}"): Op(ADMIN, lambda t: (_schedule(t), {"name": "Weekly"})),
    ("DELETE", "/schedules/{id}"): Op(ADMIN, lambda t: (_schedule(t), None)),
    ("POST", "/schedules/{id}/pause"): Op(ADMIN, lambda t: (f"{_schedule(t)}/pause", None)),
    ("POST", "/schedules/{id}/resume"): Op(ADMIN, lambda t: (f"{_schedule(t)}/resume", None)),
    ("POST", "/schedules/{id}/trigger"): Op(ADMIN, lambda t: (f"{_schedule(t)}/trigger", None)),
    ("POST", "/policies"): Op(ADMIN, lambda t: ("/policies", policy_body(t))),
    ("PUT", "/policies/{id}"): Op(ADMIN, lambda t: (_policy(t), policy_body(t))),
    ("PATCH", "/policies/{id}"): Op(ADMIN, lambda t: (_policy(t), {"enabled": False})),
    ("DELETE", "/policies/{id}"): Op(ADMIN, lambda t: (_policy(t), None)),
    # webhooks: they send project data outside, so admins and owners only
    ("POST", "/webhooks"): Op(ADMIN, lambda t: ("/webhooks", webhook_body(t))),
    ("PUT", "/webhooks/{id}"): Op(ADMIN, lambda t: (_webhook(t), webhook_body(t))),
    ("PATCH", "/webhooks/{id}"): Op(ADMIN, lambda t: (_webhook(t), {"enabled": False})),
    ("DELETE", "/webhooks/{id}"): Op(ADMIN, lambda t: (_webhook(t), None)),
    ("POST", "/webhooks/{id}/test"): Op(ADMIN, lambda t: (f"{_webhook(t)}/test", None)),
    ("POST", "/webhooks/{id}/rotate-secret"): Op(ADMIN, lambda t: (f"{_webhook(t)}/rotate-secret", {})),
    ("POST", "/webhook-deliveries/{id}/redeliver"): Op(ADMIN, lambda t: (f"{_delivery(t)}/redeliver", None)),
}


# ------------------------------------------------------------------------------
# Every write endpoint has an entry
# ------------------------------------------------------------------------------
def _normalized(path: str) -> str:
    return path.removeprefix("/api/v1").rstrip("/")


def write_operations() -> set[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {
        (method.upper(), _normalized(path))
        for path, item in schema["paths"].items()
        for method in item
        if method in ("post", "put", "patch", "delete") and path.startswith("/api/v1/")
    }


def test_every_write_endpoint_has_a_matrix_entry():
    operations = write_operations()
    assert operations - set(MATRIX) - PUBLIC == set(), "add these to MATRIX with the roles README gives them"
    assert set(MATRIX) - operations == set(), "these are no longer in the API"


# ------------------------------------------------------------------------------
# Each caller gets what the table says
# ------------------------------------------------------------------------------
def client_of(team: Team, who: str):
    if who == "key":
        key = ApiKeyFactory(project=team.project, created_by=team.members[OWNER], role=KEY_ROLE)
        return client_for(api_key=key.raw)
    return team.client(who)


#: Body fields naming a row of the team's project: to an outsider the row does not exist.
REFERENCES = ("project", "projects", "workflow")


def outcome(response, body: dict | None) -> str:
    status = response.status_code
    assert status < 500, response.content
    assert status != 401, response.content
    if status == 403:
        return DENIED
    if status == 404:
        return HIDDEN
    errors = response.json().get("errors", {}) if status == 400 else {}
    if any(name in errors and name in (body or {}) for name in REFERENCES):
        return HIDDEN  # "Invalid pk … - object does not exist."
    return OK


@pytest.mark.parametrize("operation", sorted(MATRIX), ids=lambda op: f"{op[0]} {op[1]}")
def test_each_caller_gets_what_the_role_table_says(team, operation):
    method, _ = operation
    op = MATRIX[operation]
    got, statuses = {}, {}
    for who in CALLERS:
        url, body = op.make(team)  # each caller acts on rows of its own
        response = getattr(client_of(team, who), method.lower())(f"/api/v1{url}", body, format="json")
        got[who], statuses[who] = outcome(response, body), response.status_code

    assert got == {who: op.expected(who) for who in CALLERS}, statuses
    allowed = [statuses[who] for who in CALLERS if got[who] == OK]
    assert any(200 <= status < 300 for status in allowed), statuses  # the body is one that works


def test_a_developer_key_gets_what_a_developer_gets(team):
    """The key column above acts as admin; the lower of key role and creator role is what counts."""
    key = ApiKeyFactory(project=team.project, created_by=team.members[OWNER], role=DEVELOPER)
    client = client_for(api_key=key.raw)
    assert client.post("/api/v1/credentials", credential_body(team), format="json").status_code == 403
    assert client.post("/api/v1/tools", tool_body(team), format="json").status_code == 201
    demoted = ApiKeyFactory(project=team.project, created_by=team.members[DEVELOPER], role=ADMIN)
    response = client_for(api_key=demoted.raw).post("/api/v1/policies", policy_body(team), format="json")
    assert response.status_code == 403


def test_an_owner_key_may_delete_the_project(team):
    key = ApiKeyFactory(project=team.project, created_by=team.members[OWNER], role=OWNER)
    assert client_for(api_key=key.raw).delete(f"/api/v1/projects/{team.project.pk}").status_code == 204


# ------------------------------------------------------------------------------
# Django admin actions (README "The operator console"): staff need the model permission and, in
# the row's project, the role the API asks for the same write; superusers act everywhere
# ------------------------------------------------------------------------------
SUPERUSER = "superuser only"
#: (app_label.model, action) -> (the permission a staff user needs, the least project role).
ADMIN_ACTIONS = {
    ("accounts.apikey", "delete_selected"): ("accounts.delete_apikey", ADMIN),
    ("accounts.apikey", "revoke"): ("accounts.change_apikey", VIEWER),  # on the keys listed: theirs, or as admin
    ("accounts.user", "delete_selected"): ("accounts.delete_user", SUPERUSER),
    ("agents.agent", "delete_selected"): ("agents.delete_agent", DEVELOPER),
    ("agents.agent", "health_check"): ("agents.change_agent", DEVELOPER),
    ("agents.modelprice", "delete_selected"): ("agents.delete_modelprice", SUPERUSER),
    ("agents.providercredential", "delete_selected"): ("agents.delete_providercredential", ADMIN),
    ("agents.tool", "delete_selected"): ("agents.delete_tool", DEVELOPER),
    ("policies.policy", "delete_selected"): ("policies.delete_policy", ADMIN),
    ("projects.membership", "delete_selected"): ("projects.delete_membership", ADMIN),
    ("projects.project", "delete_selected"): ("projects.delete_project", OWNER),
    ("projects.project", "freeze"): ("projects.change_project", ADMIN),
    ("projects.project", "unfreeze"): ("projects.change_project", ADMIN),
    ("runs.approval", "delete_selected"): ("runs.delete_approval", ADMIN),
    ("runs.run", "cancel"): ("runs.change_run", DEVELOPER),
    ("runs.run", "delete_selected"): ("runs.delete_run", ADMIN),
    ("runs.run", "retry"): ("runs.change_run", DEVELOPER),
    ("runs.runstep", "approve"): ("runs.change_runstep", DEVELOPER),  # and the step's own role, on each step
    ("runs.runstep", "delete_selected"): ("runs.delete_runstep", ADMIN),
    ("runs.runstep", "reject"): ("runs.change_runstep", DEVELOPER),
    ("schedules.schedule", "delete_selected"): ("schedules.delete_schedule", ADMIN),
    ("schedules.schedule", "disable"): ("schedules.change_schedule", ADMIN),
    ("schedules.schedule", "enable"): ("schedules.change_schedule", ADMIN),
    ("schedules.schedule", "run_now"): ("schedules.change_schedule", ADMIN),
    ("webhooks.delivery", "delete_selected"): ("webhooks.delete_delivery", ADMIN),
    ("webhooks.delivery", "redeliver"): ("webhooks.change_delivery", ADMIN),
    ("webhooks.endpoint", "delete_selected"): ("webhooks.delete_endpoint", ADMIN),
    ("workflows.workflow", "delete_selected"): ("workflows.delete_workflow", DEVELOPER),
    ("workflows.workflowversion", "publish"): ("workflows.change_workflowversion", DEVELOPER),
}


def staff_with(*perms: str):
    from django.contrib.auth.models import Permission

    user = UserFactory(is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return type(user).objects.get(pk=user.pk)  # a fresh instance: permissions are cached per instance


#: Our apps; the admins of Django's auth, celery-beat and the token blacklist are theirs.
OUR_APPS = {"accounts", "projects", "agents", "workflows", "policies", "runs", "schedules", "webhooks"}


def offered_actions(user) -> set[tuple[str, str]]:
    """The actions the admin offers this user on each of our changelists (and would run on a POST)."""
    from django.contrib import admin
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = user
    return {
        (model._meta.label_lower, name)
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in OUR_APPS and model_admin.has_view_permission(request)
        for name in model_admin.get_actions(request)
    }


def every_admin_action() -> set[tuple[str, str]]:
    superuser = UserFactory(is_staff=True, is_superuser=True)
    return offered_actions(superuser)


@pytest.mark.django_db
def test_every_admin_action_has_a_matrix_entry():
    actions = every_admin_action()
    assert actions - set(ADMIN_ACTIONS) == set(), "add these to ADMIN_ACTIONS with the permission and role they need"
    assert set(ADMIN_ACTIONS) - actions == set(), "these are no longer offered"


@pytest.mark.django_db
@pytest.mark.parametrize(("action", "needs"), sorted(ADMIN_ACTIONS.items()), ids=lambda v: str(v))
def test_an_admin_action_is_offered_to_staff_with_its_permission_and_role_only(action, needs):
    perm, least = needs
    app_label = action[0].split(".")[0]
    view = f"{app_label}.view_{action[0].split('.')[1]}"
    for role in (VIEWER, DEVELOPER, ADMIN, OWNER):
        staff = staff_with(view, perm)
        MembershipFactory(user=staff, role=role)
        offered = action in offered_actions(staff)
        assert offered == (least != SUPERUSER and Role.at_least(role, least)), role
        MembershipFactory(user=(looker := staff_with(view)), role=OWNER)
        assert action not in offered_actions(looker)  # read-only staff only look, whatever their role
    assert action not in offered_actions(staff_with(view, perm))  # staff in no project act nowhere
    member = UserFactory()  # a project owner who is not staff gets no admin at all
    MembershipFactory(user=member, role=OWNER)
    assert offered_actions(member) == set()


@pytest.mark.django_db
def test_read_only_staff_posting_an_action_changes_nothing(team):
    from django.test import Client

    run = run_in(team)
    client = Client()
    staff = staff_with("runs.view_run")
    MembershipFactory(user=staff, project=team.project, role=OWNER)
    client.force_login(staff)

    response = client.post("/admin/runs/run/", {"action": "cancel", "_selected_action": [str(run.pk)]})

    assert response.status_code in (200, 302)
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


@pytest.mark.django_db
def test_staff_acting_on_runs_of_two_projects_act_only_where_their_role_allows(team):
    from django.test import Client

    mine, watched = run_in(team), run_in(team)
    from projects.tests.factories import ProjectFactory

    other = ProjectFactory()
    Run.objects.filter(pk=watched.pk).update(project=other)
    staff = staff_with("runs.view_run", "runs.change_run")
    MembershipFactory(user=staff, project=team.project, role=DEVELOPER)
    MembershipFactory(user=staff, project=other, role=VIEWER)
    client = Client()
    client.force_login(staff)

    selected = [str(mine.pk), str(watched.pk)]
    response = client.post("/admin/runs/run/", {"action": "cancel", "_selected_action": selected}, follow=True)

    assert Run.objects.get(pk=mine.pk).status == RunStatus.CANCELLING
    assert Run.objects.get(pk=watched.pk).status == RunStatus.QUEUED  # a viewer there: left out, and told
    assert "Left out 1 selected row(s): this needs the developer role" in response.content.decode()
