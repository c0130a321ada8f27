"""What every policy kind declares: the JSON Schema of its config (published in the API docs),
an example, the actions it may take, the stages it is judged at, and ``judge()``.

Stages: ``admission`` (may this run start?), ``slot`` (may this queued run take a concurrency
slot now?) and ``call`` (may this step make this provider or tool call?). A kind is judged only at
its stages, with the question of that stage; a kind the registry does not know is never judged.
Questions carry what a judge needs from the runs app as plain values or callables built by runs:
policies never import runs.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..choices import PolicyAction

ADMISSION, SLOT, CALL = "admission", "slot", "call"
STAGES = (ADMISSION, SLOT, CALL)

_SLUG = {"type": "string", "minLength": 1, "maxLength": 64}
_USD = {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000_000}
ALL_ACTIONS = frozenset({PolicyAction.BLOCK, PolicyAction.WARN, PolicyAction.REQUIRE_APPROVAL})
# Run-level kinds act before a run exists, where there is no step to park.
RUN_ACTIONS = frozenset({PolicyAction.BLOCK, PolicyAction.WARN})


# ------------------------------------------------------------------------------
# The questions, one per stage
# ------------------------------------------------------------------------------
@dataclass
class Admission:
    """A run asking to start. ``runs_started(since, api_key)`` answers the times (ascending) at
    which the project's runs, or one API key's when given, were queued since then."""

    project_id: Any
    workflow_slug: str
    api_key: Any
    runs_started: Callable[[datetime, Any], Any]
    stage: str = ADMISSION


@dataclass(frozen=True)
class Contender:
    """A run of the project that holds a concurrency slot or waits for one."""

    pk: Any
    holds_slot: bool
    waiting: bool  # queued, not started yet
    priority: int
    queued_at: datetime
    waiting_on: int | None  # the concurrency policy holding it, if any
    workflow_slug: str
    task_agent_slug: str | None
    agents: frozenset[str] = frozenset()  # the agents its workflow's steps run

    @property
    def queue_key(self) -> tuple:
        """Who goes first among queued runs: higher priority, then the earlier run."""
        return (-self.priority, self.queued_at, str(self.pk))


@dataclass
class Slot:
    """A queued run asking for a slot, among its project's contenders (itself included)."""

    mine: Contender
    contenders: list[Contender]
    stage: str = SLOT


@dataclass
class Call:
    """What the engine is about to do. ``agent`` is set for provider calls, ``tool`` for tool calls."""

    project_id: Any
    run_id: Any
    step_id: int
    attempt: int
    workflow_id: int | None = None
    workflow_slug: str = ""
    agent: Any = None
    provider: str = ""
    model: str = ""
    tool: Any = None
    estimate_usd: Decimal | None = None  # None: the model has no price
    estimate_tokens: int = 0
    #: Hits (by key) a human approved for this step: those require_approval policies let it pass.
    granted: frozenset[str] = frozenset()
    stage: str = field(default=CALL, init=False)
    #: What each budget's judge found in its window, by policy id: (span, use), read under the
    #: budget's lock before this call's reservation. The threshold notices reuse it.
    budget_uses: dict = field(default_factory=dict, init=False, compare=False, repr=False)


@dataclass
class Objection:
    """Why a policy objects. At admission a refusal answers ``status_code`` (and Retry-After)."""

    reason: str
    status_code: int = 422
    retry_after: int | None = None


# ------------------------------------------------------------------------------
# The kind
# ------------------------------------------------------------------------------
class PolicyKindBase:
    name: str = ""
    label: str = ""
    schema: dict = {}
    example: dict = {}
    actions: frozenset[str] = ALL_ACTIONS
    stages: frozenset[str] = frozenset()
    #: Shown when the config matches none of the schema's top-level ``anyOf`` alternatives.
    any_of_hint: str = ""
    #: Call-stage kinds that hold spend: judged under lock_scopes, with the call's cost reserved.
    reserves: bool = False
    #: A reserving kind kept per run (locks the run) rather than per project or policy.
    per_run: bool = False

    def extra_errors(self, config: dict) -> list[str]:
        """What the schema cannot say about a config that passed it."""
        return []

    def judge(self, policy, question) -> Objection | None:
        """The policy's objection to the question (Admission, Slot or Call), or None."""
        raise NotImplementedError

    # Slot stage only ------------------------------------------------------------
    def needs_agents(self, policy) -> bool:
        """Whether judging needs the agents each contender's workflow runs (a costlier read)."""
        return False

    # Call stage only ------------------------------------------------------------
    def covers(self, policy, call: Call) -> bool:
        """For reserving kinds: whether the call counts against this policy at all."""
        return False

    def keeps_dollars(self, policy) -> bool:
        """For reserving kinds: a dollar limit cannot be kept for a model with no price."""
        return False

    def subject(self, policy, call: Call) -> str:
        """What an approval of this policy's objection lets pass in the step (a tool call's
        subject is always its tool)."""
        return f"model:{call.provider}/{call.model}"
