"""The fast frame path's held sign-in: a session whose frame request passed every middleware check
is not checked again for ``READROOM_DICOMWEB_SIGNIN_SECONDS`` (default 5; 0: never held) in this
process — unless something it depends on changed (docs/viewer.md, "The fast frame path").

A viewer asks for hundreds of frames within seconds on one session, and the project's middleware
decided the same each time: the session row, the user row and its auth hash, the second-factor
device, the roles (four queries), the lock, the host. What is held is that decision for one exact
set of request headers (cookie, host, forwarded scheme …: a request that differs in any header but
Accept is checked afresh) and the headers the middleware added to the answer.

What reaches a held sign-in at once, in every process: a change is recorded in Redis (the shared
cache) with its time, on commit, and each frame request on a held sign-in reads those records in
the same round trip as the PHI audit's own key (``changes_and_audit``), so a change costs no extra
round trip. Recorded: any save or deletion of the session row (sign-out, the screen lock and its
unlock, the once-a-minute renewal, a new key at sign-in), sign-out and the screen lock themselves
(for a session engine other than the database), any save or deletion of the user (deactivation, a
new password), a change of their groups (roles) and any save or deletion of their second-factor
devices. What is computed from the held session at each request: its renewal (every minute the
request goes to Django, which renews it), the server's idle lock and the session's expiry.

What a hold can miss for up to its window: a change made without Django's model signals (a
queryset ``update()``, SQL by hand) or a record that Redis failed to take; both are logged or
documented, and 0 turns holding off."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from accounts.middleware import IdleSessionMiddleware, session_lock_after

log = logging.getLogger(__name__)

# A change recorded this close before a hold was made counts as after it: the recording and the
# checking processes read their own clocks (one machine, or NTP between nodes).
CLOCK_SLACK_SECONDS = 2.0


def signin_seconds() -> float:
    return float(getattr(settings, "READROOM_DICOMWEB_SIGNIN_SECONDS", 5))


@dataclasses.dataclass(frozen=True)
class HeldSignIn:
    """A frame request's passed middleware checks, for one set of request headers."""

    user: Any  # the user as the middleware loaded them (only their id is used again)
    made_at: float  # taken before the session was read: a change recorded since is not in it
    until: float
    renewed_at: int  # the session's last renewal (IdleSessionMiddleware), for renewal and lock
    lock_after: int  # the session's lock time (accounts.middleware.session_lock_after)
    session_key: str
    headers: tuple[tuple[str, str], ...]  # what the middleware added to the frames' 200


# headers key (HeldSignIn.key's) → the hold: this process's. Bounded: cleared when full.
_SIGNINS: dict[tuple, HeldSignIn] = {}
_SIGNINS_MAX = 1024


def request_key(scope: dict) -> tuple:
    """What the middleware's decision may depend on, besides the path (one frames path is like
    another to it) and Accept (the view's own negotiation): the scheme and every other header."""
    headers = tuple(sorted((name, value) for name, value in scope.get("headers", ()) if name != b"accept"))
    return (scope.get("scheme"), scope.get("server"), headers)


def held(key: tuple, now: float) -> HeldSignIn | None:
    """The hold for these headers when it is still good by the clock: within its window, before
    the session's renewal is due (Django renews it), before its idle lock and its expiry."""
    if signin_seconds() <= 0:
        return None
    signin = _SIGNINS.get(key)
    if signin is None:
        return None
    renewal_due = now - signin.renewed_at >= IdleSessionMiddleware.RENEW_EVERY_SECONDS
    if now >= signin.until or renewal_due:
        _SIGNINS.pop(key, None)
        return None
    return signin


def hold(key: tuple, request, made_at: float, headers: tuple[tuple[str, str], ...]) -> None:
    """Hold the sign-in a frame request just passed with (its session, user and added headers)."""
    seconds = signin_seconds()
    if seconds <= 0:
        return
    session = request.session
    renewed_at = session.get(IdleSessionMiddleware.RENEWED_AT_KEY)
    if not isinstance(renewed_at, int) or renewed_at <= 0:
        return  # not yet renewed once: Django's next answer renews it
    # The earliest of: the window, the session's idle end and its server lock (both from its renewal)
    ends = min(
        renewed_at + session.get_expiry_age(),
        renewed_at + session_lock_after(session) + IdleSessionMiddleware.RENEW_EVERY_SECONDS,
    )
    until = min(made_at + seconds, ends)
    if len(_SIGNINS) >= _SIGNINS_MAX:
        _SIGNINS.clear()
    _SIGNINS[key] = HeldSignIn(
        user=request.user,  # evaluated by the checks; its id keys the grant and the audit
        made_at=made_at,
        until=until,
        renewed_at=renewed_at,
        lock_after=session_lock_after(session),
        session_key=session.session_key,
        headers=headers,
    )


def drop(key: tuple) -> None:
    _SIGNINS.pop(key, None)


# --- what changed, recorded in the shared cache ---------------------------------------------------


def _session_change_key(session_key: str) -> str:
    # a digest: a session key is a credential, and Redis is not where sessions are kept
    return "readroom:signin-changed:s:" + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def _user_change_key(user_id: int) -> str:
    return f"readroom:signin-changed:u:{user_id}"


def changes_and_audit(signin: HeldSignIn, audit_key: str) -> tuple[bool, bool]:
    """(whether the session or user changed since the hold was made, whether the PHI audit key
    exists), in one round trip to Redis."""
    session_key, user_key = _session_change_key(signin.session_key), _user_change_key(signin.user.pk)
    # the default cache's per-context object shares the process's Redis pool (radiology.process_cache)
    found = cache.get_many([session_key, user_key, audit_key])
    changed = any(
        isinstance(found.get(key), float) and found[key] >= signin.made_at - CLOCK_SLACK_SECONDS
        for key in (session_key, user_key)
    )
    return changed, audit_key in found


def _change_record(key: str) -> None:
    """Record a change at commit (a hold made before it is refused; one made after reads it)."""
    if signin_seconds() <= 0:
        return

    def record() -> None:
        try:
            cache.set(key, time.time(), timeout=int(signin_seconds() + CLOCK_SLACK_SECONDS) + 2)
        except Exception:  # never fail a sign-out or a save for this: the hold's window still ends
            log.warning("DICOMweb held sign-in: could not record a change (%s)", key, exc_info=True)

    transaction.on_commit(record)


def session_changed(session_key: str | None) -> None:
    if session_key:
        _change_record(_session_change_key(session_key))


def user_changed(user_id: int | None) -> None:
    if user_id:
        _change_record(_user_change_key(user_id))


# --- receivers (connected in InterfacesConfig.ready) ----------------------------------------------


def on_session_row(sender, instance, **kwargs) -> None:
    session_changed(instance.session_key)


def on_signed_out_or_locked(sender, request=None, session_key=None, **kwargs) -> None:
    if session_key is None and request is not None:
        session_key = getattr(getattr(request, "session", None), "session_key", None)
    session_changed(session_key)


def on_user_row(sender, instance, **kwargs) -> None:
    user_changed(instance.pk)


def on_user_groups(sender, instance, action, reverse, pk_set, **kwargs) -> None:
    if not action.startswith("post_"):
        return
    if not reverse:
        user_changed(instance.pk)
        return
    # group.user_set.add(...) / .clear(): the users named, or every member before a clear
    for user_id in pk_set or ():
        user_changed(user_id)


def on_group_cleared(sender, instance, action, reverse, **kwargs) -> None:
    """``group.user_set.clear()`` names no users after the fact: record its members before."""
    if action == "pre_clear" and reverse:
        for user_id in instance.user_set.values_list("pk", flat=True):
            user_changed(user_id)


def on_device_row(sender, instance, **kwargs) -> None:
    user_changed(getattr(instance, "user_id", None))


def receivers_connect() -> None:
    from django.apps import apps
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_out
    from django.contrib.sessions.models import Session
    from django.db.models.signals import m2m_changed, post_delete, post_save
    from django_otp.models import Device

    from accounts.signals import screen_locked

    uid = "readroom.dicomweb.signin"
    for signal in (post_save, post_delete):
        signal.connect(on_session_row, sender=Session, dispatch_uid=f"{uid}.session")
        user = get_user_model()
        signal.connect(on_user_row, sender=user, dispatch_uid=f"{uid}.user")
        for model in apps.get_models():
            if issubclass(model, Device) and not model._meta.abstract:
                signal.connect(on_device_row, sender=model, dispatch_uid=f"{uid}.device.{model._meta.label}")
    through = get_user_model().groups.through
    m2m_changed.connect(on_user_groups, sender=through, dispatch_uid=f"{uid}.groups")
    m2m_changed.connect(on_group_cleared, sender=through, dispatch_uid=f"{uid}.groups.clear")
    user_logged_out.connect(on_signed_out_or_locked, dispatch_uid=f"{uid}.logout")
    screen_locked.connect(on_signed_out_or_locked, dispatch_uid=f"{uid}.lock")
