from django.apps import AppConfig


class ImagingConfig(AppConfig):
    """Patients, orders, studies, series and instances."""

    name = "imaging"
    verbose_name = "Imaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from facilities.signals import identity_domain_changed
        from imaging import audit  # noqa: F401  (registers models with django-auditlog)
        from imaging.services import on_facility_domain_changed

        identity_domain_changed.connect(
            on_facility_domain_changed, dispatch_uid="readroom.imaging.domain_merge"
        )
        # every ReadRoom process (web, SCP, listener, worker, manage.py) starts by removing the
        # half-written temp files a crash left (one directory each: cheap)
        from imaging.storage import temp_files_sweep

        temp_files_sweep()
