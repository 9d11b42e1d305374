from django.contrib import admin, messages
from django.http import HttpRequest

from accounts.roles import Role, has_role
from facilities.models import DicomSender, Facility, Hl7Sender
from facilities.selectors import facilities_administered_by, facilities_visible_to
from facilities.signals import identity_domain_changed

# Identity, contract and interfaces are set by operations (ReadRoom's interface analysts);
# a facility admin keeps the rest current.
OPERATIONS_FIELDS = (
    "code",
    "state",
    "kind",
    "active",
    "sla_stroke_minutes",
    "sla_trauma_minutes",
    "sla_stat_minutes",
    "sla_asap_minutes",
    "sla_routine_minutes",
    "stroke_readers_minutes",
    "stroke_director_minutes",
    "escalation_webhook_url",
    "accepts_general_readers",
    "routing_mode",
    "claim_timeout_minutes",
    "screen_lock_minutes",  # the contract's idle screen lock (docs/alerts.md)
    # reporting contract (issue 6): wet reads, the critical-result deadline, the per-read rate
    "accepts_preliminary",
    "critical_result_minutes",
    "read_rate",
    "oru_addenda_as_nte",
    "hl7_outbound_host",
    "hl7_outbound_port",
    # edge security (issue 15): TLS for the ORU, and who may connect for this facility
    "hl7_outbound_tls",
    "hl7_allowed_networks",
    "hl7_max_messages_per_minute",
    "dicom_allowed_networks",
    "hl7_accession_fallback",
    "study_quiet_seconds",
    "hl7_expected_gap_minutes",
    "dicom_expected_gap_minutes",
    # identity domain and orderless wait (issue 13): which issuers name one patient is the
    # interface analysts' call, as a wrong mapping would merge two hospitals' patients
    "patient_id_authority",
    "patient_id_issuers",
    "orderless_wait_minutes",
    # Q/R and priors (issue 17): where the worker connects and which environment variable's secret
    # it sends there (docs/priors.md) — the interface analysts' call, never a facility admin's
    "dicom_move_destinations",
    "prior_sources",
)


class Hl7SenderInline(admin.TabularInline):
    model = Hl7Sender
    extra = 0


class DicomSenderInline(admin.TabularInline):
    model = DicomSender
    extra = 0


@admin.register(Facility)
class FacilityAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "state", "kind", "timezone", "active")
    list_filter = ("state", "kind", "active")
    search_fields = ("code", "name")

    def get_inlines(self, request: HttpRequest, obj: Facility | None = None):
        if request.user.is_superuser or has_role(request.user, Role.OPERATIONS):
            return [Hl7SenderInline, DicomSenderInline]
        return []

    def get_queryset(self, request: HttpRequest):
        return facilities_visible_to(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Facility | None = None) -> bool:
        if obj is None:
            return super().has_view_permission(request)
        return facilities_visible_to(request.user).filter(pk=obj.pk).exists()

    def has_change_permission(self, request: HttpRequest, obj: Facility | None = None) -> bool:
        if obj is None:
            return super().has_change_permission(request)
        return facilities_administered_by(request.user).filter(pk=obj.pk).exists()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser or has_role(request.user, Role.OPERATIONS)

    def has_delete_permission(self, request: HttpRequest, obj: Facility | None = None) -> bool:
        return False  # a client with history is deactivated, never deleted

    def save_model(self, request: HttpRequest, obj: Facility, form, change: bool) -> None:
        # the MRN domain as it was, before this form (and its HL7 sender inlines) are saved
        stored = Facility.objects.filter(pk=obj.pk).first() if change else None
        request._domain_before = stored.patient_id_domain() if stored else None
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        """After the inlines (an HL7 sender's MSH-4 is a name of the domain): when the MRN domain
        changed, the same merge as an onboarding re-apply (``identity_domain_changed``; imaging
        merges the records that became one person, audited under this user), in the admin's
        transaction — the save and the merge commit together. A new facility has no records yet."""
        super().save_related(request, form, formsets, change)
        before = getattr(request, "_domain_before", None)
        facility = Facility.objects.get(pk=form.instance.pk)  # not the form's instance: its cache is stale
        if before is None or facility.patient_id_domain() == before:
            return
        for _, lines in identity_domain_changed.send(Facility, facility=facility, actor=request.user):
            for line in lines or []:
                self.message_user(request, line, messages.INFO)

    def get_readonly_fields(self, request: HttpRequest, obj: Facility | None = None):
        if request.user.is_superuser or has_role(request.user, Role.OPERATIONS):
            return ()
        return OPERATIONS_FIELDS
