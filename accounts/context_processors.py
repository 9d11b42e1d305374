from django.http import HttpRequest

from accounts.navigation import navigation_for, prefers_dark_theme
from accounts.roles import roles_of


def navigation(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "theme": "light", "user_roles": []}
    return {
        "nav_items": navigation_for(user),
        "theme": "dark" if prefers_dark_theme(user) else "light",
        "user_roles": sorted(r.value for r in roles_of(user)),
    }
