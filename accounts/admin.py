from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    fieldsets = (*DjangoUserAdmin.fieldsets, ("ReadRoom", {"fields": ("display_name",)}))
    list_display = ("username", "display_name", "email", "is_active", "is_staff")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # deactivate instead: audit rows keep pointing at the user
