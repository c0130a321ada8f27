import hashlib
import hmac
import secrets
import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from sparkops.roles import Role

API_KEY_TAG = "spk"


class UserManager(BaseUserManager):
    use_in_migrations = True

    @classmethod
    def normalize_email(cls, email: str | None) -> str:
        # Emails are the login; "Ada@Example.com" and "ada@example.com" are one account.
        return (email or "").strip().lower()

    def _create_user(self, email: str, password: str | None, **extra) -> "User":
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra) -> "User":
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra) -> "User":
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra)

    def get_by_natural_key(self, username):
        return self.get(email=self.normalize_email(username))


class User(AbstractBaseUser, PermissionsMixin):
    """A person: logs in with email and password, holds a role in each of their projects."""

    email = models.EmailField(unique=True, help_text='Login and contact address, e.g. "ada@example.com".')
    name = models.CharField(max_length=150, blank=True, default="", help_text='Display name, e.g. "Ada Lovelace".')
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="May log into the admin site.")
    date_joined = models.DateTimeField(default=timezone.now)
    token_version = models.PositiveIntegerField(
        default=0, editable=False, help_text="Bumped on password change; tokens carrying an older version are refused."
    )

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["email"]
        constraints = [
            models.UniqueConstraint(
                Lower("email"),
                name="accounts_user_email_ci_unique",
                violation_error_message="A user with this email already exists.",
            )
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = UserManager.normalize_email(self.email)

    def get_full_name(self) -> str:
        return self.name or self.email

    def get_short_name(self) -> str:
        return self.name or self.email


def digest_api_key(raw: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKey(models.Model):
    """A credential for a program. It acts for its creator in one project, with at most its
    own role and never more than the creator currently holds there."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="api_keys")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, help_text='What the key is for, e.g. "nightly ETL".')
    role = models.CharField(
        max_length=16,
        choices=Role.choices,
        default=Role.VIEWER,
        help_text='Highest role the key acts with, e.g. "developer".',
    )
    prefix = models.CharField(
        max_length=16, unique=True, editable=False, help_text="Visible part of the key, used to find it."
    )
    digest = models.CharField(max_length=64, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Optional; the key is refused after this time.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values),
                name="accounts_apikey_role_valid",
                violation_error_message="Unknown role.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def generate() -> tuple[str, str, str]:
        """A new key as (full key, prefix, digest). The full key is shown once and never stored."""
        prefix = secrets.token_hex(6)
        raw = f"{API_KEY_TAG}_{prefix}_{secrets.token_urlsafe(32)}"
        return raw, prefix, digest_api_key(raw)

    @staticmethod
    def split(raw: str) -> str | None:
        """The prefix of a well-formed key, else None."""
        tag, _, rest = raw.partition("_")
        prefix, _, secret = rest.partition("_")
        return prefix if tag == API_KEY_TAG and prefix and secret else None

    def matches(self, raw: str) -> bool:
        return hmac.compare_digest(self.digest, digest_api_key(raw))

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())
