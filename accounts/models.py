from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person who signs in. Roles are groups (accounts.roles); facility scope is per object
    (django-guardian for facility admins, credentialing privileges for radiologists).

    Users are deactivated, never deleted: the audit log is append-only and keeps pointing at them."""

    display_name = models.CharField(max_length=200, blank=True, help_text="e.g. Dana Whitfield, MD")

    def __str__(self) -> str:
        return self.display_name or self.get_full_name() or self.username
