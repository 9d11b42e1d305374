from __future__ import annotations

import time
from collections.abc import Callable

from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.cache import patch_vary_headers

from accounts.roles import requires_second_factor
from accounts.second_factor import has_confirmed_device

SECOND_FACTOR_ISSUE = {
    "severity": "error",
    "code": "forbidden",
    "diagnostics": "A verified second factor is required.",
}


class SecondFactorRequiredMiddleware:
    """People who sign final reads or adjudicate peer review work only with a verified second factor.

    Signed in but not verified: with an enrolled authenticator they are sent to enter a code, without
    one to enrol one. Nothing else is served to them until then."""

    EXEMPT_PREFIXES = (
        "/static/",
        "/healthz",
        "/readyz",
        "/logout/",
        "/account/verify/",
        "/account/security/",
    )

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if (
            user.is_authenticated
            and not user.is_verified()
            and requires_second_factor(user)
            and not request.path.startswith(self.EXEMPT_PREFIXES)
        ):
            if request.path.startswith(("/api/", "/dicomweb/")):
                return JsonResponse({"detail": "A verified second factor is required."}, status=403)
            if request.path.startswith("/fhir/"):  # FHIR clients read errors as OperationOutcome
                outcome = {"resourceType": "OperationOutcome", "issue": [SECOND_FACTOR_ISSUE]}
                return JsonResponse(outcome, status=403, content_type="application/fhir+json")
            target = "accounts:verify" if has_confirmed_device(user) else "accounts:security"
            return redirect(f"{reverse(target)}?next={request.get_full_path()}")
        return self.get_response(request)


class IdleSessionMiddleware(SessionMiddleware):
    """Sessions end after READROOM_IDLE_TIMEOUT_MINUTES without activity.

    Activity renews the session's expiry, but at most once a minute (``RENEW_EVERY_SECONDS``):
    saving the session row on every request cost three round trips on each worklist call, more
    than the worklist's own SQL (bench/worklist). So an idle session ends between one minute before
    the timeout and the timeout — never later. A page polling for fresh data (header
    ``X-ReadRoom-Poll``) is not activity: an unattended operations screen must still sign itself out."""

    RENEW_EVERY_SECONDS = 60
    RENEWED_AT_KEY = "_readroom_renewed_at"

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is None:
            return super().process_response(request, response)
        if request.headers.get("X-ReadRoom-Poll"):
            if not session.modified:
                patch_vary_headers(response, ("Cookie",))
                return response
        elif not session.is_empty():
            now = int(time.time())
            if now - session.get(self.RENEWED_AT_KEY, 0) >= self.RENEW_EVERY_SECONDS:
                session[self.RENEWED_AT_KEY] = now  # modified: saved with a fresh expiry
        return super().process_response(request, response)


LOCKED_KEY = "_readroom_locked"


def session_locked(session) -> bool:
    return bool(session is not None and session.get(LOCKED_KEY))


class ScreenLockMiddleware:
    """A locked session (issue 14, docs/alerts.md) serves nothing with PHI until it is unlocked.

    At the idle timeout a page locks its screen (static/readroom/live.js) and the session with it:
    ``POST /live/lock/`` marks the session locked and keeps it (``READROOM_LOCK_MAX_HOURS`` at most),
    so that unlocking is one step — the password, or an authenticator code for signing roles — and a
    waiting code stroke can still be shown (without PHI) and ring. While locked every request is
    refused except the lock's own ends (the PHI-free pending alerts, acknowledge, unlock), sign-out
    and static files: an API call gets 423 with a message, a page the lock page."""

    ALLOWED = ("/static/", "/healthz", "/readyz", "/logout/", "/live/")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not session_locked(getattr(request, "session", None)) or request.path.startswith(self.ALLOWED):
            return self.get_response(request)
        if request.method != "GET" or not request.headers.get("Accept", "").startswith("text/html"):
            return JsonResponse({"detail": "The screen is locked: unlock it first."}, status=423)
        from django.shortcuts import render

        response = render(request, "live/locked.html", status=423)
        response["Cache-Control"] = "no-store, private"
        return response
