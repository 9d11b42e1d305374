from django.apps import AppConfig


class CredentialingConfig(AppConfig):
    """Radiologist profiles, licences, privileges and the eligibility engine."""

    name = "credentialing"
    verbose_name = "Credentialing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from credentialing import audit  # noqa: F401  (registers models with django-auditlog)
