from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users, roles, second factor, and the audit log of patient-data access."""

    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from accounts import (
            audit,  # noqa: F401  (registers models with django-auditlog)
            checks,  # noqa: F401  (registers the deploy check)
        )
        from accounts.setup import on_post_migrate

        # post_migrate is sent after the whole migration run, when every table exists.
        post_migrate.connect(on_post_migrate, sender=self, dispatch_uid="readroom.accounts.setup")
