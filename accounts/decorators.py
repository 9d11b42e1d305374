"""View guards shared by every app's pages: the role check at the door. The object check (which
facility, which study) stays in each app's selectors."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def refuse(request: HttpRequest, reason: str) -> HttpResponse:
    """403 with a sentence saying why (DESIGN.md §8: errors say what to do)."""
    return render(request, "403.html", {"reason": reason}, status=403)


def role_required(predicate: Callable, reason: str):
    """Sign-in required, then ``predicate(user)`` must hold, else a 403 giving ``reason``."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapper(request, *args, **kwargs):
            if not predicate(request.user):
                return refuse(request, reason)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
