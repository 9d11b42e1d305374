from django.apps import AppConfig


class ReportsConfig(AppConfig):
    """Templates, authoring, signing and delivery of reports."""

    name = "reports"
    verbose_name = "Reports"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from reports import audit  # noqa: F401  (registers models with django-auditlog)
        from reports.setup import on_post_migrate

        # After the whole migration run, when the tables exist; again after every migrate because
        # SQLite drops triggers when a migration rebuilds a table.
        post_migrate.connect(on_post_migrate, sender=self, dispatch_uid="readroom.reports.setup")

        from interfaces.signals import outbound_acknowledged
        from reports.delivery import on_outbound_acknowledged

        outbound_acknowledged.connect(on_outbound_acknowledged, dispatch_uid="readroom.reports.delivered")

        from reports.services import on_study_order_unmatched
        from worklist.signals import study_order_unmatched

        # a match by hand undone (worklist.order_match): a signed report refuses it, a draft follows it
        study_order_unmatched.connect(on_study_order_unmatched, dispatch_uid="readroom.reports.unmatched")
