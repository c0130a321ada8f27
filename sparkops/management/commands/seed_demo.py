"""Demo data for a first look. Idempotent: running it twice changes nothing the second time."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import User
from agents import services as agent_services
from agents.models import Agent, Tool
from policies import services as policy_services
from policies.choices import PolicyAction, PolicyKind
from policies.models import Policy
from projects import services as project_services
from projects.models import Membership, Project
from runs import services as run_services
from runs.choices import Trigger
from runs.models import Run
from schedules import services as schedule_services
from schedules.models import Schedule
from sparkops.roles import Role
from workflows import services as workflow_services
from workflows.models import Workflow

DEMO_PASSWORD_DEFAULT = "spark-demo-pass"  # noqa: S105 - demo data, refused with DEBUG off
OWNER_EMAIL = "demo@sparkops.local"
SECOND_EMAIL = "dev@sparkops.local"
PROJECTS = [
    ("demo-research", "Demo research", "Agents that gather and summarise sources."),
    ("demo-support", "Demo support", "Agents that triage and answer support tickets."),
]

DEMO_TOOLS = [
    ("calculator", "Calculator", "builtin", {"function": "arithmetic"}, "read"),
    ("render_text", "Render text", "builtin", {"function": "template"}, "read"),
    ("extract_json", "Extract from JSON", "builtin", {"function": "json_extract"}, "read"),
    (
        "fetch_page",
        "Fetch a page",
        "http",
        {"method": "GET", "url": "https://example.com/{{ path }}", "timeout": 10},
        "read",
    ),
    # The demo's risky tool: no workflow uses it; a step or agent that does waits for an admin.
    ("post_update", "Post an update", "http", {"method": "POST", "url": "https://example.com/updates"}, "write"),
]
TOPIC_SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string"},
        "depth": {"type": "integer", "minimum": 1, "maximum": 10, "description": "3 when not given."},
    },
    "required": ["topic"],
}
DEMO_WORKFLOWS = [
    (
        "brief",
        "Research brief",
        "Research a topic, then write a short brief.",
        [
            {
                "key": "research",
                "kind": "agent",
                "agent": "researcher",
                "prompt": "Find facts about {{ inputs.topic }}.",
            },
            {
                "key": "write",
                "kind": "agent",
                "agent": "writer",
                "depends_on": ["research"],
                "prompt": "Summarise for a busy reader: {{ steps.research.output }}",
            },
        ],
    ),
    (
        "review",
        "Reviewed report",
        "Two researchers in parallel, a depth check, and a human sign-off.",
        [
            {"key": "facts", "kind": "agent", "agent": "researcher", "prompt": "Facts about {{ inputs.topic }}."},
            {
                "key": "numbers",
                "kind": "tool",
                "tool": "calculator",
                # depth is optional: a run without it takes the default depth of 3.
                "input": {"expression": "{{ inputs.depth | default(3) }} * 10"},
            },
            {
                "key": "deep",
                "kind": "condition",
                "left": "{{ steps.numbers.output }}",
                "op": ">=",
                "right": "30",
                "then": ["draft"],
                "else": ["quick_note"],
                "depends_on": ["facts", "numbers"],
            },
            {"key": "draft", "kind": "agent", "agent": "writer", "prompt": "Long report on {{ steps.facts.output }}"},
            {"key": "quick_note", "kind": "agent", "agent": "writer", "prompt": "One line on {{ inputs.topic }}"},
            {
                "key": "sign_off",
                "kind": "approval",
                "role": "admin",
                "message": "Publish the report?",
                "depends_on": ["draft"],
            },
            {
                "key": "publish",
                "kind": "agent",
                "agent": "reviewer",
                "depends_on": ["sign_off"],
                "prompt": "Final check of: {{ steps.draft.output }}",
            },
        ],
    ),
]
DEMO_SCHEDULE = "Every minute (demo)"
# On the schedule's project. Echo agents cap output at 512 tokens, so a call is estimated at about
# $0.0012 (echo-1: $1 in, $2 out per million tokens): the every-minute schedule spends well under a
# dollar a day and never nears the ceiling.
DEMO_POLICIES = [
    ("Demo daily budget", PolicyKind.BUDGET, {"amount_usd": 5, "window": "day", "timezone": "UTC"}, PolicyAction.BLOCK),
    ("Demo run ceiling", PolicyKind.RUN_CEILING, {"max_usd": 0.5, "max_tokens": 200000}, PolicyAction.BLOCK),
    (
        "Writes need an admin",
        PolicyKind.APPROVAL,
        {"risk_class": "write", "role": "admin"},
        PolicyAction.REQUIRE_APPROVAL,
    ),
]
DEMO_AGENTS = [
    ("researcher", "Researcher", "researcher", "You gather facts and cite them.", ["calculator", "extract_json"]),
    ("writer", "Writer", "writer", "You turn notes into a short, clear summary.", ["render_text"]),
    ("reviewer", "Reviewer", "reviewer", "You check a draft for errors and answer approve or revise.", []),
]


class Command(BaseCommand):
    help = "Create demo users and projects (safe to run twice)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--password",
            default=None,
            help="Password for the demo users (default: SPARKOPS_DEMO_PASSWORD or a fixed demo one).",
        )
        parser.add_argument("--force", action="store_true", help="Seed even when DEBUG is off.")

    @transaction.atomic
    def handle(self, *args, password=None, force=False, **options):
        if not settings.DEBUG and not force:
            raise CommandError("Refusing to create demo accounts with DEBUG off; pass --force if you mean it.")
        # Only a password given on the command line replaces an existing user's: the environment's
        # and the fixed one are for a first seed, not for resetting a password changed since.
        reset = password is not None
        password = password or settings.SPARKOPS_DEMO_PASSWORD or DEMO_PASSWORD_DEFAULT
        owner = self._user(OWNER_EMAIL, "Demo Owner", password, staff=True, reset=reset)
        second = self._user(SECOND_EMAIL, "Demo Developer", password, staff=False, reset=reset)
        for slug, name, description in PROJECTS:
            project = Project.objects.filter(slug=slug).first()
            if project is None:
                project = project_services.project_create(user=owner, name=name, slug=slug, description=description)
                self.stdout.write(f"created project {slug}")
            Membership.objects.get_or_create(project=project, user=second, defaults={"role": Role.DEVELOPER})
            self._catalog(project)
            self._workflows(project, owner)
        demo = Project.objects.get(slug=PROJECTS[0][0])
        self._policies(demo, owner)
        self._schedule(demo, owner)
        self.stdout.write(self.style.SUCCESS(f"demo ready: log in as {OWNER_EMAIL} or {SECOND_EMAIL}"))

    def _user(self, email: str, name: str, password: str, *, staff: bool, reset: bool) -> User:
        user = User.objects.filter(email=email).first()
        if user is None:
            user = User.objects.create_user(
                email=email, password=password, name=name, is_staff=staff, is_superuser=staff
            )
            self.stdout.write(f"created user {email}")
        elif reset:
            user.set_password(password)
            user.save(update_fields=["password"])
            self.stdout.write(f"password set for {email}")
        return user

    def _catalog(self, project: Project) -> None:
        """Demo tools and agents on the offline echo provider."""
        tools = {}
        for slug, name, kind, config, risk in DEMO_TOOLS:
            tool = Tool.objects.filter(project=project, slug=slug).first()
            if tool is None:
                tool = agent_services.tool_save(
                    tool=Tool(project=project, slug=slug, name=name, kind=kind, config=config, risk_class=risk)
                )
            tools[slug] = tool
        for slug, name, role, prompt, tool_slugs in DEMO_AGENTS:
            if not Agent.objects.filter(project=project, slug=slug).exists():
                agent = Agent(
                    project=project,
                    slug=slug,
                    name=name,
                    role=role,
                    provider="echo",
                    model="echo-1",
                    system_prompt=prompt,
                    parameters={"temperature": 0.2, "max_tokens": 512},
                )
                agent_services.agent_save(agent=agent, tool_list=[tools[t] for t in tool_slugs])

    def _workflows(self, project: Project, owner: User) -> None:
        """Demo workflows, published, and a few runs the echo provider completes at once."""
        for slug, name, description, steps in DEMO_WORKFLOWS:
            workflow = Workflow.objects.filter(project=project, slug=slug).first()
            if workflow is None:
                workflow = workflow_services.workflow_create(
                    project=project,
                    user=owner,
                    name=name,
                    slug=slug,
                    description=description,
                    definition={"steps": steps},
                    input_schema=TOPIC_SCHEMA,
                    publish=True,
                )
            if not Run.objects.filter(workflow=workflow).exists():
                for topic, depth in (("solar storage", 5), ("tidal power", 1)):
                    run_services.run_start(
                        workflow=workflow,
                        inputs={"topic": topic, "depth": depth},
                        user=owner,
                        trigger=Trigger.CLI,
                        title=f"Demo: {topic}",
                    )

    def _policies(self, project: Project, owner: User) -> None:
        """A daily budget, a per-run ceiling and an approval rule for tools that write."""
        for name, kind, config, action in DEMO_POLICIES:
            if not Policy.objects.filter(project=project, name=name).exists():
                policy = Policy(project=project, name=name, kind=kind, config=config, action=action, created_by=owner)
                policy_services.policy_save(policy=policy)
                self.stdout.write(f"created policy {name!r}")

    def _schedule(self, project: Project, owner: User) -> None:
        """An every-minute schedule on the echo provider: a beat-driven run within a minute."""
        if Schedule.objects.filter(project=project, name=DEMO_SCHEDULE).exists():
            return
        workflow = Workflow.objects.get(project=project, slug="brief")
        schedule = Schedule(
            project=project,
            workflow=workflow,
            name=DEMO_SCHEDULE,
            cron="* * * * *",
            timezone="UTC",
            inputs={"topic": "the minute's news"},
            created_by=owner,
        )
        schedule_services.schedule_save(schedule=schedule)
        self.stdout.write(f"created schedule {DEMO_SCHEDULE!r} (every minute; pause it in the admin)")
