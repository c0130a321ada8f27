"""An approval step: a gate that waits for a person with at least ``role`` to decide."""

from .base import Known, StepKind

# The project roles (sparkops.roles.Role, which workflows may not import) a gate may name.
# Not viewer: developers write workflows and start runs, so a gate is there to stop them or
# their programs; a gate a viewer could open would let a read-only member make a run go on.
APPROVER_ROLES = ("owner", "admin", "developer")
DEFAULT_APPROVER_ROLE = "admin"


class ApprovalKind(StepKind):
    name = "approval"
    fields = frozenset({"message", "role"})
    templated = ("message",)

    def check(self, step: dict, known: Known) -> list[str]:
        problems = []
        if not isinstance(step.get("message", ""), str):
            problems.append("message: must be a template string.")
        if step.get("role", DEFAULT_APPROVER_ROLE) not in APPROVER_ROLES:
            problems.append(
                f"role: must be one of {', '.join(APPROVER_ROLES)}; "
                "a gate cannot name a role below the developers who edit the workflow."
            )
        return problems
