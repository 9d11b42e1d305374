"""Clinical records in the Django admin: for superusers (support), scoped and audited like every
other place that shows patient data. Roles get their own pages for their work instead."""

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from accounts.audit import ReadKind, record_phi_access
from imaging.facts import PatientIdentifier
from imaging.models import Instance, Order, Patient, Series, Study
from imaging.services import (
    PATIENT_FIELDS,
    PatientCorrectionRefused,
    patient_correct,
    patient_correction_refusal,
)

IDENTIFIER_FIELDS = ("mrn", "assigning_authority")
CORRECTED_IN_ADMIN = "corrected in the admin"


class AuditedPatientDataAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # clinical records come from the hospital's orders and images, under its rules

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # clinical records are corrected or merged, never deleted

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None:
            record_phi_access(obj, kind=ReadKind.ADMIN)
        return super().change_view(request, object_id, form_url, extra_context)


class PatientAdminForm(forms.ModelForm):
    """The patient's identifier and demographics, saved through ``imaging.services.patient_correct``
    (the identity rules orders and images meet). The reason goes into the audit rows."""

    reason = forms.CharField(
        required=False,
        max_length=300,
        help_text="Why (the audit log keeps it). Required when the MRN or the assigning authority changes.",
    )

    class Meta:
        model = Patient
        fields = (*IDENTIFIER_FIELDS, *PATIENT_FIELDS)

    def identifier_sent(self) -> PatientIdentifier | None:
        """The corrected identifier, or None when the form left it as it was."""
        if not set(IDENTIFIER_FIELDS) & set(self.changed_data):
            return None
        return PatientIdentifier(self.cleaned_data["mrn"], self.cleaned_data["assigning_authority"])

    def demographics_sent(self) -> dict[str, object]:
        return {name: self.cleaned_data[name] for name in PATIENT_FIELDS if name in self.changed_data}

    def clean(self) -> dict:
        # the instance is still the stored record here (the form writes into it after clean)
        data = super().clean()
        if self.errors:
            return data
        identifier = self.identifier_sent()
        if identifier is not None and not data.get("reason", "").strip():
            self.add_error("reason", "Say why the identifier is corrected: it decides who this record is.")
        refusal = patient_correction_refusal(self.instance, identifier, self.demographics_sent())
        if refusal:
            self.add_error(None, refusal)
        return data


@admin.register(Patient)
class PatientAdmin(AuditedPatientDataAdmin):
    """Corrections by hand follow the identity rules (docs/orders.md "A patient corrected in the
    admin"): the facility never changes, a merged record is a read-only link, a new patient comes
    from its order or its images; an identifier another patient holds merges the two."""

    form = PatientAdminForm
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

    def has_change_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        if obj is not None and obj.merged_into_id:
            return False  # a link left by a merge: never used again, shown for the record
        return super().has_change_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Patient | None = None):
        return ("facility", "merged_into", "created_at", "updated_at")

    def save_model(self, request: HttpRequest, obj: Patient, form: PatientAdminForm, change: bool) -> None:
        # not obj.save(): the form already wrote into obj; the service re-reads the stored record
        try:
            done = patient_correct(
                patient=obj,
                identifier=form.identifier_sent(),
                demographics=form.demographics_sent(),
                actor=request.user,
                reason=form.cleaned_data.get("reason", "").strip() or CORRECTED_IN_ADMIN,
            )
        except PatientCorrectionRefused as refused:  # changed since the form was checked
            self.message_user(request, str(refused), messages.ERROR)
            obj.refresh_from_db()
            return
        obj.refresh_from_db()
        if done.merged:
            self.message_user(
                request,
                f"Merged into {done.patient} (patient {done.patient.pk}): its orders and studies now "
                f"include this record's; MRN {obj.mrn} stays as a link to it.",
                messages.WARNING,
            )


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
    # whose order it is follows the identity rules (a merge moves it), never a hand edit
    readonly_fields = ("facility", "patient")


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
    # the patient follows the identity rules; the order is matched (and undone) on the operations
    # worklist, which records the event and routes the study again (docs/orders.md)
    readonly_fields = ("facility", "patient", "order", "order_match")


@admin.register(Series)
class SeriesAdmin(AuditedPatientDataAdmin):
    list_display = ("series_instance_uid", "modality", "description", "number_of_instances")
    raw_id_fields = ("study",)


@admin.register(Instance)
class InstanceAdmin(AuditedPatientDataAdmin):
    list_display = ("sop_instance_uid", "instance_number", "size_bytes", "received_at")
    raw_id_fields = ("series",)
