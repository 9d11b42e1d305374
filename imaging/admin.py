"""Clinical records in the Django admin: for superusers (support), scoped and audited like every
other place that shows patient data. Roles get their own pages for their work instead."""

from django.contrib import admin
from django.http import HttpRequest

from accounts.audit import ReadKind, record_phi_access
from imaging.models import Instance, Order, Patient, Series, Study


class AuditedPatientDataAdmin(admin.ModelAdmin):
    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # clinical records are corrected or merged, never deleted

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None:
            record_phi_access(obj, kind=ReadKind.ADMIN)
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(Patient)
class PatientAdmin(AuditedPatientDataAdmin):
    list_display = (
        "mrn",
        "assigning_authority",
        "family_name",
        "given_name",
        "birth_date",
        "sex",
        "facility",
    )
    list_filter = ("facility",)
    search_fields = ("mrn", "family_name")


@admin.register(Order)
class OrderAdmin(AuditedPatientDataAdmin):
    list_display = (
        "accession_number",
        "facility",
        "procedure_code",
        "procedure_text",
        "priority",
        "status",
    )
    list_filter = ("facility", "priority", "status")
    search_fields = ("accession_number", "placer_order_number", "filler_order_number")
    raw_id_fields = ("patient",)


@admin.register(Study)
class StudyAdmin(AuditedPatientDataAdmin):
    list_display = (
        "accession_number",
        "facility",
        "modalities",
        "description",
        "status",
        "first_received_at",
    )
    list_filter = ("facility", "status")
    search_fields = ("accession_number", "study_instance_uid")
    raw_id_fields = ("patient", "order")


@admin.register(Series)
class SeriesAdmin(AuditedPatientDataAdmin):
    list_display = ("series_instance_uid", "modality", "description", "number_of_instances")
    raw_id_fields = ("study",)


@admin.register(Instance)
class InstanceAdmin(AuditedPatientDataAdmin):
    list_display = ("sop_instance_uid", "instance_number", "size_bytes", "received_at")
    raw_id_fields = ("series",)
