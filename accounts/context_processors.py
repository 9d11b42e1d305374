from django.http import HttpRequest

from accounts.navigation import navigation_for, prefers_dark_theme
from accounts.roles import requires_second_factor, roles_of


def navigation(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "theme": "light", "user_roles": []}
    # Until a signing role passes the second factor every page redirects to it: show no menu.
    awaiting_second_factor = requires_second_factor(user) and not user.is_verified()
    return {
        "nav_items": [] if awaiting_second_factor else navigation_for(user),
        "theme": "dark" if prefers_dark_theme(user) else "light",
        "user_roles": sorted(r.value for r in roles_of(user)),
    }
