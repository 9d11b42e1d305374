from django.contrib import admin

from credentialing.models import (
    BoardCertification,
    DeaRegistration,
    Document,
    FacilityCredentialing,
    FacilityPrivilege,
    Fellowship,
    MalpracticeCoverage,
    PrivilegeChecklistItem,
    RadiologistProfile,
    StateLicence,
    Subspecialty,
)


@admin.register(RadiologistProfile)
class RadiologistProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "npi")
    search_fields = ("user__username", "user__last_name", "npi")
    filter_horizontal = ("subspecialties",)
    raw_id_fields = ("user",)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Subspecialty)
class SubspecialtyAdmin(admin.ModelAdmin):
    list_display = ("code", "name")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Browse only: credentialing records change in the workspace (/credentialing/), whose services
    enforce the privilege workflow, the checklist and encrypted document storage."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(StateLicence)
class StateLicenceAdmin(ReadOnlyAdmin):
    list_display = ("profile", "state", "number", "status", "expires_on", "verified_at")
    list_filter = ("state", "status")
    search_fields = ("number", "profile__user__username", "profile__user__display_name")


@admin.register(BoardCertification)
class BoardCertificationAdmin(ReadOnlyAdmin):
    list_display = ("profile", "board", "specialty", "expires_on", "verified_at")
    list_filter = ("board",)


@admin.register(Fellowship)
class FellowshipAdmin(ReadOnlyAdmin):
    list_display = ("profile", "subspecialty", "institution", "completed_on")


@admin.register(DeaRegistration)
class DeaRegistrationAdmin(ReadOnlyAdmin):
    list_display = ("profile", "number", "state", "expires_on")


@admin.register(MalpracticeCoverage)
class MalpracticeCoverageAdmin(ReadOnlyAdmin):
    list_display = ("profile", "carrier", "policy_number", "expires_on")


@admin.register(Document)
class DocumentAdmin(ReadOnlyAdmin):
    list_display = ("title", "profile", "kind", "content_type", "size_bytes", "uploaded_at")
    list_filter = ("kind", "content_type")
    exclude = ("storage_path", "storage_key_id")


class ChecklistInline(admin.TabularInline):
    model = PrivilegeChecklistItem
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(FacilityPrivilege)
class FacilityPrivilegeAdmin(ReadOnlyAdmin):
    list_display = ("profile", "facility", "status", "granted_on", "expires_on")
    list_filter = ("status", "facility")
    inlines = [ChecklistInline]


@admin.register(FacilityCredentialing)
class FacilityCredentialingAdmin(ReadOnlyAdmin):
    list_display = ("facility", "mso_contact_name", "reappointment_months", "accepts_proxy")
