"""Administration of the rota's repeating templates and time off. Saving goes through the services
(``worklist.coverage``), so the Shift rows the eligibility engine reads follow at once."""

from django.contrib import admin, messages
from django.utils import timezone

from worklist.coverage import HORIZON_DAYS, shift_template_apply, time_off_record
from worklist.models import ShiftTemplate, TimeOff


@admin.register(ShiftTemplate)
class ShiftTemplateAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "radiologist",
        "weekdays",
        "start_time",
        "end_time",
        "timezone",
        "valid_from",
        "valid_until",
        "active",
    )
    list_filter = ("active", "timezone", "facilities")
    search_fields = ("name", "radiologist__username", "radiologist__display_name")
    filter_horizontal = ("facilities", "subspecialties")
    raw_id_fields = ("radiologist",)

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)  # the M2M scope first: shifts copy it
        created = shift_template_apply(template_id=form.instance.pk, at=timezone.now())
        messages.info(
            request, f"{created} shift(s) of the next {HORIZON_DAYS} days (re)created from this template."
        )


@admin.register(TimeOff)
class TimeOffAdmin(admin.ModelAdmin):
    """Recording only: time off changes shifts, so it is added through ``time_off_record`` and not
    edited afterwards (add a shift back by hand if it was recorded in error)."""

    list_display = ("radiologist", "starts_at", "ends_at", "reason", "recorded_by")
    fields = ("radiologist", "starts_at", "ends_at", "reason")
    raw_id_fields = ("radiologist",)

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change) -> None:
        result = time_off_record(
            radiologist=obj.radiologist,
            starts_at=obj.starts_at,
            ends_at=obj.ends_at,
            reason=obj.reason,
            recorded_by=request.user,
        )
        obj.pk = result.time_off.pk
        messages.info(
            request,
            f"Shifts: {result.removed} removed, {result.trimmed} trimmed, {result.split} split "
            "for this time off.",
        )
