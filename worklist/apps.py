from django.apps import AppConfig


class WorklistConfig(AppConfig):
    """Routing, claims, SLA clocks, escalation and the live worklist."""

    name = "worklist"
    verbose_name = "Worklist"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import post_migrate

        from accounts.middleware import ScreenLockMiddleware
        from accounts.signals import screen_locked
        from imaging.signals import ai_result_recorded, study_cancelled, study_routable
        from worklist import (
            audit,  # noqa: F401  (registers models with django-auditlog)
            coverage_tasks,  # noqa: F401  (registers the coverage/assignment tasks)
        )
        from worklist.ai_triage import on_ai_result_recorded
        from worklist.broadcast import on_screen_locked, on_user_logged_out
        from worklist.services import on_study_cancelled, on_study_routable
        from worklist.setup import on_post_migrate

        post_migrate.connect(on_post_migrate, sender=self, dispatch_uid="readroom.worklist.setup")
        study_routable.connect(on_study_routable, dispatch_uid="readroom.worklist.route")
        study_cancelled.connect(on_study_cancelled, dispatch_uid="readroom.worklist.cancel")
        ai_result_recorded.connect(on_ai_result_recorded, dispatch_uid="readroom.worklist.ai_triage")
        user_logged_out.connect(on_user_logged_out, dispatch_uid="readroom.worklist.logout_sockets")
        # the server's own lock of an idle session (the page's lock view tells the sockets itself)
        screen_locked.connect(
            on_screen_locked, sender=ScreenLockMiddleware, dispatch_uid="readroom.worklist.screen_locked"
        )
