from django.contrib import admin

from accounts.roles import Role, has_role
from facilities.selectors import facilities_administered_by
from worklist.models import (
    AiTriageRule,
    CatalogueRule,
    EscalationDelivery,
    Shift,
    StudyAssignment,
    StudyEscalation,
    StudyEvent,
)


@admin.register(Shift)
class ShiftAdmin(admin.ModelAdmin):
    list_display = ("radiologist", "starts_at", "ends_at", "note")
    list_filter = ("facilities", "subspecialties")
    search_fields = ("radiologist__username", "radiologist__display_name")
    date_hierarchy = "starts_at"
    filter_horizontal = ("facilities", "subspecialties")
    raw_id_fields = ("radiologist",)


@admin.register(CatalogueRule)
class CatalogueRuleAdmin(admin.ModelAdmin):
    list_display = (
        "facility",
        "procedure_code",
        "description_pattern",
        "rank",
        "subspecialty",
        "modality",
        "rvu",
        "priority",
        "stroke_protocol",
        "trauma_protocol",
    )
    list_filter = ("subspecialty", "stroke_protocol", "trauma_protocol", "facility")
    search_fields = ("procedure_code", "description_pattern", "note")


@admin.register(AiTriageRule)
class AiTriageRuleAdmin(admin.ModelAdmin):
    """A facility's AI triage rules (docs/ai.md): operations for every facility, a facility admin for
    the facilities they administer only."""

    list_display = (
        "facility",
        "name",
        "finding_codes",
        "modality",
        "procedure_pattern",
        "raise_to",
        "rank_first",
    )
    list_filter = ("facility", "raise_to", "active")

    def _everything(self, request) -> bool:
        return request.user.is_superuser or has_role(request.user, Role.OPERATIONS)

    def get_queryset(self, request):
        rules = super().get_queryset(request)
        return (
            rules
            if self._everything(request)
            else rules.filter(facility__in=facilities_administered_by(request.user))
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "facility" and not self._everything(request):
            kwargs["queryset"] = facilities_administered_by(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(StudyAssignment)
class StudyAssignmentAdmin(admin.ModelAdmin):
    """Read-only: claims change only through the services (compare-and-set, events)."""

    list_display = ("study", "routed_at", "claimed_by", "claimed_at", "because")
    raw_id_fields = ("study", "claimed_by", "rule")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(StudyEvent)
class StudyEventAdmin(admin.ModelAdmin):
    list_display = ("at", "study", "kind", "actor")
    list_filter = ("kind",)
    raw_id_fields = ("study", "actor")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class EscalationDeliveryInline(admin.TabularInline):
    model = EscalationDelivery
    extra = 0
    can_delete = False
    readonly_fields = ("channel", "recipient", "status", "error", "at")


@admin.register(StudyEscalation)
class StudyEscalationAdmin(admin.ModelAdmin):
    """Read-only history: steps are written once by ``worklist.escalation``."""

    list_display = ("study", "step", "due_at", "at")
    list_filter = ("step",)
    raw_id_fields = ("study",)
    inlines = [EscalationDeliveryInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# Repeating templates and time off: their own module (they save through worklist.coverage).
from worklist import coverage_admin  # noqa: E402, F401
