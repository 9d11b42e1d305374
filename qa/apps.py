from django.apps import AppConfig


class QaConfig(AppConfig):
    """Peer review sampling, RADPEER scoring and adjudication."""

    name = "qa"
    verbose_name = "Quality assurance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from qa import audit  # noqa: F401  (registers models with django-auditlog)
        from qa.receivers import on_report_signed
        from reports.signals import report_signed

        report_signed.connect(on_report_signed, dispatch_uid="readroom.qa.sample")
