from django.apps import AppConfig


class InterfacesConfig(AppConfig):
    """The protocol edge: HL7 v2 over MLLP, DICOM, DICOMweb, FHIR."""

    name = "interfaces"
    verbose_name = "Interfaces"
    default_auto_field = "django.db.models.BigAutoField"
