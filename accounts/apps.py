from django.apps import AppConfig
from django.core.checks import Error, register


class AccountsConfig(AppConfig):
    """Users, roles, second factor, and the audit log of patient-data access."""

    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from accounts import (
            audit,  # noqa: F401  (registers models with django-auditlog)
            checks,  # noqa: F401  (registers the deploy check)
        )
        from accounts.setup import on_post_migrate
        from radiology.pg_types import timestamptz_loader_install

        # post_migrate is sent after the whole migration run, when every table exists.
        post_migrate.connect(on_post_migrate, sender=self, dispatch_uid="readroom.accounts.setup")
        # timestamps parsed in C on PostgreSQL connections in UTC (radiology/pg_types.py)
        connection_created.connect(timestamptz_loader_install, dispatch_uid="readroom.pg_types")
        register(lock_roles_check)


def lock_roles_check(app_configs, **kwargs) -> list:
    """A misspelt role in READROOM_LOCK_AFTER_SECONDS_BY_ROLE would silently not lock anyone sooner."""
    from accounts.screen_lock import unknown_lock_roles

    return [
        Error(
            f"READROOM_LOCK_AFTER_SECONDS_BY_ROLE names {name!r}, which is no role",
            hint="Use the names of accounts.roles.Role, e.g. RADIOLOGIST=600,OPERATIONS=300.",
            id="accounts.E001",
        )
        for name in unknown_lock_roles()
    ]
