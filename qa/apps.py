from django.apps import AppConfig


class QaConfig(AppConfig):
    """Peer review sampling, RADPEER scoring and adjudication."""

    name = "qa"
    verbose_name = "Quality assurance"
    default_auto_field = "django.db.models.BigAutoField"
