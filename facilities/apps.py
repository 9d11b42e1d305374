from django.apps import AppConfig


class FacilitiesConfig(AppConfig):
    """Client hospitals, their contracts (SLA targets) and interface settings."""

    name = "facilities"
    verbose_name = "Facilities"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from facilities import audit  # noqa: F401  (registers models with django-auditlog)
