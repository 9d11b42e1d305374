from django.apps import AppConfig


class ImagingConfig(AppConfig):
    """Patients, orders, studies, series and instances."""

    name = "imaging"
    verbose_name = "Imaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from imaging import audit  # noqa: F401  (registers models with django-auditlog)
