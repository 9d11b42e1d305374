from django.contrib import admin

from credentialing.models import RadiologistProfile, Subspecialty


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
