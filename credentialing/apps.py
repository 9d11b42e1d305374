from django.apps import AppConfig


class CredentialingConfig(AppConfig):
    """Radiologist profiles, licences, privileges and the eligibility engine."""

    name = "credentialing"
    verbose_name = "Credentialing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_migrate

        from credentialing import audit  # noqa: F401  (registers models with django-auditlog)
        from credentialing.screen_lock import on_user_logged_in
        from credentialing.setup import on_post_migrate

        post_migrate.connect(on_post_migrate, sender=self, dispatch_uid="readroom.credentialing.setup")
        user_logged_in.connect(on_user_logged_in, dispatch_uid="readroom.credentialing.screen_lock")
