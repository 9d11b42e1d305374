from django.apps import AppConfig


class ReportsConfig(AppConfig):
    """Templates, authoring, signing and delivery of reports."""

    name = "reports"
    verbose_name = "Reports"
    default_auto_field = "django.db.models.BigAutoField"
