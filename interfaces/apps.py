from django.apps import AppConfig


class InterfacesConfig(AppConfig):
    """The protocol edge: HL7 v2 over MLLP, DICOM, DICOMweb, FHIR."""

    name = "interfaces"
    verbose_name = "Interfaces"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from imaging.models import Order, Study
        from interfaces.prior_triggers import on_order_saved, on_study_saved

        # A new order, or the first image of a study without one, asks the facility's prior sources.
        post_save.connect(on_order_saved, sender=Order, dispatch_uid="readroom.priors.order")
        post_save.connect(on_study_saved, sender=Study, dispatch_uid="readroom.priors.study")
        from imaging.signals import instance_display_checked
        from interfaces.dicom.web_signin import receivers_connect
        from interfaces.fhircast import receivers  # noqa: F401 — connects the hub's publishers

        # the fast frame path's held sign-ins hear of sign-outs, locks and account changes
        receivers_connect()
        # the decode check read the file: its WADO-RS metadata side-car is made from the same bytes
        instance_display_checked.connect(_metadata_sidecar_write, dispatch_uid="readroom.metadata_sidecar")


def _metadata_sidecar_write(sender, **kwargs) -> None:
    """The decode check's receiver, importing the side-car code (pydicom, numpy) when a check runs:
    imported from ``ready()`` it cost every process's ``django.setup()`` ~0.6 s of CPU, a manage.py
    command or the HL7 listener included (tests/test_settings.py shows setup imports neither)."""
    from interfaces.dicom.metadata_sidecar import on_instance_display_checked

    on_instance_display_checked(sender, **kwargs)
