"""What every step kind tells validation and the planner. A kind is a subclass of ``StepKind``
registered in ``workflows.kinds``; the engine side (``runs/engine/kinds/``) runs it. Pure: no
Django, so the API, the admin and the run engine share one set of rules."""

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

from ..definition import Catalog


@dataclass(frozen=True)
class Known:
    """What a kind's check may look up: the project's agents and tools, and the definition's
    usable step keys."""

    catalog: Catalog
    keys: Collection[str]


class StepKind:
    name: ClassVar[str]
    #: The fields of this kind's steps, beyond those every step has (key, kind, depends_on, ...).
    fields: ClassVar[frozenset[str]] = frozenset()
    #: The ones a step of this kind must have.
    required: ClassVar[tuple[str, ...]] = ()
    #: Fields holding one template string, checked against the inputs and earlier steps.
    templated: ClassVar[tuple[str, ...]] = ()

    def check(self, step: dict, known: Known) -> list[str]:
        """Problems with this kind's own fields, as messages; unknown and missing fields are
        already reported."""
        return []

    def template_fields(self, step: dict) -> list[tuple[str, str]]:
        """(field, source) of every template in a step; values of the wrong type are reported by
        ``check``."""
        return [(name, step[name]) for name in self.templated if isinstance(step.get(name), str)]

    def chooses(self, step: dict) -> list[str]:
        """Keys of the steps this one chooses between: they wait for it. Tolerant of bad input
        (it is also read while validating)."""
        return []


def catalog_problem(kind: str, slug: Any, catalog: Catalog) -> str | None:
    """Why ``slug`` is not a usable agent or tool (``kind``) of the project, if it is not."""
    if not isinstance(slug, str):
        return f"{kind}: must be the slug of a {kind} in this project."
    usable = catalog.get(f"{kind}s", {}).get(slug)
    if usable is None:
        return f"{kind}: no {kind} '{slug}' in this project."
    if not usable:
        return f"{kind}: '{slug}' is disabled."
    return None
