from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
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
# The user's effective lock time in seconds (accounts.screen_lock.lock_after_seconds), written at
# sign-in and on each page (credentialing.screen_lock): the page and the server lock at the same time.
LOCK_AFTER_KEY = "_readroom_lock_after"
# Between the server's record of activity (IdleSessionMiddleware renews it at most once a minute; a
# page's heartbeat, /live/active/, every 30 s while someone works in it) and the last real activity
# lie at most this many seconds: the server locks only this much after the lock time, so it never
# locks a screen that is in use.
SERVER_LOCK_SLACK_SECONDS = IdleSessionMiddleware.RENEW_EVERY_SECONDS


def lock_ceiling_seconds() -> int:
    """The longest a screen may stay unlocked while idle: before the session's own idle end (HIPAA
    automatic logoff, SESSION_COOKIE_AGE), which may come up to a minute early, with the server's
    slack to spare."""
    return max(30, settings.SESSION_COOKIE_AGE - 90)


def session_lock_after(session) -> int:
    """The lock time this session was given (the default where none was: a session signed in before)."""
    stored = session.get(LOCK_AFTER_KEY)
    if isinstance(stored, int) and stored > 0:
        return stored
    return min(settings.READROOM_LOCK_AFTER_SECONDS, lock_ceiling_seconds())


def lock_due(session, now: float) -> bool:
    """Whether the server's record says this session has been idle past its lock time. A session with
    no record yet (just signed in, no response sent) is not."""
    renewed = session.get(IdleSessionMiddleware.RENEWED_AT_KEY)
    if not isinstance(renewed, int | float) or renewed <= 0:
        return False
    return now - renewed >= session_lock_after(session) + SERVER_LOCK_SLACK_SECONDS


def session_locked(session) -> bool:
    """Locked by its page (``POST /live/lock/``) or by the server (idle past its lock time, though no
    page said so: a page closed, asleep or with a broken script must not leave an open session)."""
    if session is None:
        return False
    return bool(session.get(LOCKED_KEY)) or lock_due(session, time.time())


def session_lock_store(session) -> None:
    """Mark the session locked and keep it while locked, at most READROOM_LOCK_MAX_HOURS."""
    session[LOCKED_KEY] = True
    session.set_expiry(int(settings.READROOM_LOCK_MAX_HOURS * 3600))
    # stored now, not at the response: the session's sockets are told next and re-read it later
    session.save()


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
        session = getattr(request, "session", None)
        if self._idle_past_lock(request, session):
            # idle past the lock with no page to say so: the server locks it (and its sockets)
            session_lock_store(session)
            # (the page's own lock, accounts.screen_lock.session_lock, sends the same signal; this
            # sender also has the worklist tell the session's sockets, as live_lock does for that one)
            from accounts.signals import screen_locked

            screen_locked.send(sender=self.__class__, user=request.user, session_key=session.session_key)
        if not session_locked(session) or request.path.startswith(self.ALLOWED):
            return self.get_response(request)
        if request.method != "GET" or not request.headers.get("Accept", "").startswith("text/html"):
            return JsonResponse({"detail": "The screen is locked: unlock it first."}, status=423)
        from django.shortcuts import render

        response = render(request, "live/locked.html", status=423)
        response["Cache-Control"] = "no-store, private"
        return response

    @staticmethod
    def _idle_past_lock(request: HttpRequest, session) -> bool:
        if session is None or not request.user.is_authenticated or session.get(LOCKED_KEY):
            return False
        return not request.path.startswith("/static/") and lock_due(session, time.time())
