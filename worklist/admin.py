from django.contrib import admin

from worklist.models import Shift


@admin.register(Shift)
class ShiftAdmin(admin.ModelAdmin):
    list_display = ("radiologist", "starts_at", "ends_at", "note")
    list_filter = ("facilities", "subspecialties")
    search_fields = ("radiologist__username", "radiologist__display_name")
    date_hierarchy = "starts_at"
    filter_horizontal = ("facilities", "subspecialties")
    raw_id_fields = ("radiologist",)
