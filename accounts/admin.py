from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import ApiToken, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    fieldsets = (*DjangoUserAdmin.fieldsets, ("ReadRoom", {"fields": ("display_name",)}))
    list_display = ("username", "display_name", "email", "is_active", "is_staff")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # deactivate instead: audit rows keep pointing at the user


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued with ``manage.py drf_create_token`` (the key is shown only there); here they
    are listed, their expiry changed, or revoked (deleted)."""

    list_display = ("prefix", "user", "created_at", "expires_at", "rate_per_minute")
    list_select_related = ("user",)
    search_fields = ("user__username", "prefix")
    fields = ("user", "prefix", "created_at", "expires_at", "rate_per_minute")
    readonly_fields = ("user", "prefix", "created_at")

    def has_add_permission(self, request) -> bool:
        return False
