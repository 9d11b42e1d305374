from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


class User(AbstractUser):
    """A person who signs in. Roles are groups (accounts.roles); facility scope is per object
    (django-guardian for facility admins, credentialing privileges for radiologists).

    Users are deactivated, never deleted: the audit log is append-only and keeps pointing at them."""

    display_name = models.CharField(max_length=200, blank=True, help_text="e.g. Dana Whitfield, MD")

    def __str__(self) -> str:
        return self.display_name or self.get_full_name() or self.username


class ApiToken(models.Model):
    """An API token for a hospital system (``Authorization: Token <key>``). Only the SHA-256 of the
    key is stored: the key is shown once, when it is issued (``manage.py drf_create_token``), and a
    copy of the database cannot be used to call the API. The key is 240 random bits, so a fast hash
    is enough (no password stretching: nothing to guess). ``prefix`` tells tokens apart in the admin."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=8, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="empty: never expires")
    rate_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="requests per minute this token may make (more: 429 with Retry-After); "
        "empty: READROOM_API_TOKEN_RATE_PER_MINUTE (empty there too: no limit)",
    )

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… of {self.user}"
