"""Project and membership services. Role rules live here, so the API and the admin agree."""

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils.text import slugify

from accounts.models import User, UserManager
from sparkops.lib.errors import Refused

from .choices import Role
from .models import Membership, Project

OWNER_ONLY = "Only owners can grant, change or revoke the owner role."
LAST_OWNER = "A project needs at least one owner; make someone else owner first."
ALREADY_MEMBER = "This user is already a member of the project."
ARCHIVED = (
    "This project is archived, so it is read-only; an admin can unarchive it first "
    '(PATCH /projects/{id} with {"archived": false}).'
)
HAS_RUNS = (
    "This project has {count} run(s); their history (and spend) is kept, so it cannot be deleted. "
    'Archive it instead (PATCH /projects/{id} with {"archived": true}): it stays readable and takes no new work.'
)


class ProjectArchived(Refused):
    status_code = 409
    code = "project_archived"

    def __init__(self, project_id):
        super().__init__(ARCHIVED.replace("{id}", str(project_id)))


class ProjectFrozen(Refused):
    """The kill switch is on: nothing new runs in the project until an admin unfreezes it."""

    status_code = 409
    code = "project_frozen"

    def __init__(self, project: Project):
        super().__init__(
            f"Project {project.name!r} is frozen (since {project.frozen_at:%Y-%m-%d %H:%M} UTC: "
            f"{project.frozen_reason or 'no reason given'}); no run or schedule fire starts in it until an admin "
            f"unfreezes it (POST /projects/{project.pk}/unfreeze).",
            frozen_at=project.frozen_at.isoformat(),
            frozen_reason=project.frozen_reason,
        )


class ProjectHasRuns(Refused):
    status_code = 409
    code = "project_has_runs"


def _unique_slug(name: str) -> str:
    base = slugify(name)[:56] or "project"
    slug, n = base, 1
    while Project.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def project_create(
    *, user: User, name: str, slug: str = "", description: str = "", archived: bool = False, **retention: int | None
) -> Project:
    """Create a project; its creator becomes its owner. ``retention``: the ``*_retention_days`` fields."""
    project = Project(
        name=name,
        slug=slug or _unique_slug(name),
        description=description,
        archived=archived,
        created_by=user,
        **retention,
    )
    project.full_clean()
    project.save()
    Membership.objects.create(user=user, project=project, role=Role.OWNER)
    return project


def project_require_writable(*, project_id) -> None:
    """Archived projects are read-only: nothing new starts in them and nothing in them changes."""
    if Project.objects.filter(pk=project_id, archived=True).exists():
        raise ProjectArchived(project_id)


def project_require_runnable(*, project_id) -> None:
    """A frozen project starts nothing: no run, no retry, no schedule fire."""
    project = Project.objects.filter(pk=project_id, frozen_at__isnull=False).first()
    if project is not None:
        raise ProjectFrozen(project)


def project_require_startable(*, project_id, project: Project | None = None) -> None:
    """project_require_writable and project_require_runnable in one read, archived first: what
    starting a run (or a retry) checks. ``project``: the project as the caller read it while
    handling this very request (the API reads it with the workflow), checked instead of a read."""
    if project is None:
        blocked = Project.objects.filter(Q(archived=True) | Q(frozen_at__isnull=False), pk=project_id).order_by()
        project = next(iter(blocked[:1]), None)
        if project is None:
            return
    if project.archived:
        raise ProjectArchived(project_id)
    if project.frozen_at is not None:
        raise ProjectFrozen(project)


def project_update(*, project: Project, **fields) -> Project:
    """Edits an active project. An archived one accepts only being unarchived (other fields sent
    along with ``archived: false`` apply too); it is read-only until then."""
    if project.archived and fields.get("archived") is not False and set(fields) - {"archived"}:
        raise ProjectArchived(project.pk)
    for name, value in fields.items():
        setattr(project, name, value)
    project.full_clean()
    project.save(update_fields=[*fields, "updated_at"])
    return project


@transaction.atomic
def project_delete(*, project: Project) -> None:
    """Deletes a project and everything in it, unless it has runs: a run's history and the spend
    recorded against it outlive the project's use, so such a project is archived instead."""
    if count := project.runs.count():
        raise ProjectHasRuns(HAS_RUNS.replace("{count}", str(count)).replace("{id}", str(project.pk)))
    project.delete()


# ------------------------------------------------------------------------------
# Memberships
# ------------------------------------------------------------------------------
def _require_manager(actor_role: str | None, *roles_touched: str) -> None:
    if not Role.at_least(actor_role, Role.ADMIN):
        raise PermissionDenied("Managing members needs the admin role.")
    if Role.OWNER in roles_touched and actor_role != Role.OWNER:
        raise PermissionDenied(OWNER_ONLY)


def _locked_owner_count(project_id) -> int:
    # Locks the owner rows: two owners demoting each other at once must not both succeed
    # and leave the project without an owner.
    return len(
        list(Membership.objects.select_for_update().filter(project_id=project_id, role=Role.OWNER).values_list("pk"))
    )


@transaction.atomic
def membership_add(*, project: Project, actor_role: str | None, email: str, role: str) -> Membership:
    _require_manager(actor_role, role)
    user = User.objects.filter(email=UserManager.normalize_email(email), is_active=True).first()
    if user is None:
        raise ValidationError({"email": "No active user has this email; they need to register first."})
    # Checked here so the error names the email field; full_clean() would report it as non-field.
    if Membership.objects.filter(project=project, user=user).exists():
        raise ValidationError({"email": ALREADY_MEMBER})
    membership = Membership(project=project, user=user, role=role)
    membership.full_clean()
    try:
        with transaction.atomic():
            membership.save()
    except IntegrityError as exc:  # added twice at once
        raise ValidationError({"email": ALREADY_MEMBER}) from exc
    return membership


@transaction.atomic
def membership_change_role(*, membership: Membership, actor_role: str | None, role: str) -> Membership:
    _require_manager(actor_role, membership.role, role)
    if membership.role == Role.OWNER and role != Role.OWNER and _locked_owner_count(membership.project_id) <= 1:
        raise ValidationError({"role": LAST_OWNER})
    membership.role = role
    membership.full_clean()
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: User, actor_role: str | None) -> None:
    """Admins remove others (owners only by owners); anyone may leave; the last owner may not."""
    if membership.user_id != actor.pk:
        _require_manager(actor_role, membership.role)
    if membership.role == Role.OWNER and _locked_owner_count(membership.project_id) <= 1:
        raise ValidationError(LAST_OWNER)
    membership.delete()
