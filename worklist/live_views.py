"""The live channel's two HTTP ends (docs/alerts.md): the alerts waiting for the signed-in user (the
resync a page asks for when its socket opens) and the acknowledgement of one. JSON, session-only,
CSRF-checked; the socket carries everything else."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from accounts.middleware import session_locked
from accounts.screen_lock import session_activity, session_lock, session_unlock
from credentialing.screen_lock import session_screen_lock_refresh
from worklist.broadcast import session_state_send
from worklist.live import (
    AlertNotFound,
    alert_acknowledge,
    alerts_pending,
    locked_notice,
    locked_study,
    notice_acknowledge,
)
from worklist.notices import notices_pending


def _signed_in_or_401(request: HttpRequest) -> JsonResponse | None:
    # a script cannot follow the login redirect: say so, and the page shows "Signed out"
    if not request.user.is_authenticated:
        return JsonResponse({"detail": "Not signed in."}, status=401)
    return None


@require_safe
def live_pending(request: HttpRequest) -> JsonResponse:
    if (refusal := _signed_in_or_401(request)) is not None:
        return refusal
    alerts = alerts_pending(request.user, at=timezone.now())
    notices = notices_pending(request.user)
    locked = session_locked(request.session)
    if locked:  # the lock shows that a stroke waits, never whose: facility, class, minutes
        alerts = [{**a, "study": locked_study(a["study"])} for a in alerts]
        notices = [locked_notice(n) for n in notices]
    response = JsonResponse({"alerts": alerts, "notices": notices, "locked": locked})
    response["Cache-Control"] = "no-store, private"
    return response


@require_POST
def live_acknowledge(request: HttpRequest) -> JsonResponse:
    if (refusal := _signed_in_or_401(request)) is not None:
        return refusal
    try:
        body = json.loads(request.body or b"{}")
        notice = str(body["notice"]) if isinstance(body, dict) and "notice" in body else None
        study_id, step = (None, "") if notice else (int(body["study"]), str(body["step"]))
    except (ValueError, KeyError, TypeError):
        return JsonResponse(
            {"detail": 'Send {"study": <id>, "step": "<step>"} or {"notice": "…"}.'}, status=400
        )
    try:
        if notice:
            ack = notice_acknowledge(request.user, notice=notice, at=timezone.now())
        else:
            ack = alert_acknowledge(request.user, study_id=study_id, step=step, at=timezone.now())
    except AlertNotFound as error:
        return JsonResponse({"detail": str(error)}, status=404)
    return JsonResponse(
        {"study": ack.study_id, "step": ack.kind, "by": str(ack.user), "at": ack.at.isoformat()}
    )


@require_POST
def live_lock(request: HttpRequest) -> JsonResponse:
    """The page went idle: lock the session with the screen (the page hid its PHI already)."""
    if (refusal := _signed_in_or_401(request)) is not None:
        return refusal
    session_lock(request)
    # the session's sockets (every window of this browser) now forward only what a lock may show
    session_state_send(request.session.session_key, "locked")
    return JsonResponse({"state": "locked"})


@require_POST
def live_active(request: HttpRequest) -> JsonResponse:
    """The page's heartbeat while someone works in it (live.js, every 30 s at most): the server's
    record of activity, by which it locks an idle session itself, follows the page's — typing a
    report or scrolling loaded images makes no other request. A session already idle past its lock
    was locked by ScreenLockMiddleware before this view: the answer says so and the page locks."""
    if (refusal := _signed_in_or_401(request)) is not None:
        return refusal
    if session_locked(request.session):
        return JsonResponse({"state": "locked"})
    session_activity(request.session)
    lock_after = session_screen_lock_refresh(request)
    return JsonResponse({"state": "live", "lock_after": lock_after})


@require_POST
def live_unlock(request: HttpRequest) -> JsonResponse:
    if (refusal := _signed_in_or_401(request)) is not None:
        return refusal
    try:
        secret = str(json.loads(request.body or b"{}").get("secret", ""))
    except (ValueError, AttributeError):
        return JsonResponse({"detail": 'Send {"secret": "…"}.'}, status=400)
    if not session_unlock(request, secret):
        return JsonResponse(
            {"detail": "That is not your password or current authenticator code."}, status=403
        )
    session_state_send(request.session.session_key, "live")
    # like the heartbeat's, the answer carries the lock time: a contract or role default changed
    # while the screen was locked binds from the unlock, not from the page's next load
    return JsonResponse({"state": "live", "lock_after": session_screen_lock_refresh(request)})
