from django.apps import AppConfig


class WorklistConfig(AppConfig):
    """Routing, claims, SLA clocks, escalation and the live worklist."""

    name = "worklist"
    verbose_name = "Worklist"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from worklist import audit  # noqa: F401  (registers models with django-auditlog)
