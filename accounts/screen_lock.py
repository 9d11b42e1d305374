"""Locking and unlocking a session's screen (issue 14, docs/alerts.md; enforced by
``accounts.middleware.ScreenLockMiddleware``).

Unlocking is one step on the same session: signing roles (who have an authenticator) give the current
code; everyone else, or a signing role who prefers it, the password. A password goes through
``authenticate()``, so django-axes counts failures and locks out as on the login page; a code through
django-otp's ``match_token``, which throttles repeated failures."""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth import authenticate
from django.http import HttpRequest
from django_otp import login as otp_login
from django_otp import match_token

from accounts.middleware import (
    LOCK_AFTER_KEY,
    LOCKED_KEY,
    IdleSessionMiddleware,
    lock_ceiling_seconds,
    session_lock_store,
)
from accounts.roles import Role, requires_second_factor, roles_of
from accounts.signals import screen_locked, screen_unlocked


def lock_after_seconds(user, *, contract_seconds: int | None = None) -> int:
    """The user's screen-lock time (docs/alerts.md "Per facility, per role"): their role's default
    (READROOM_LOCK_AFTER_SECONDS_BY_ROLE, the shortest of their roles), else ReadRoom's
    (READROOM_LOCK_AFTER_SECONDS); shortened by ``contract_seconds`` — the strictest contract among
    the facilities they see, computed by the caller (facilities are a floor above) — and never past
    the session's idle limit."""
    by_role = settings.READROOM_LOCK_AFTER_SECONDS_BY_ROLE
    for_roles = [by_role[role.name] for role in roles_of(user) if role.name in by_role]
    lock_after = min(for_roles) if for_roles else settings.READROOM_LOCK_AFTER_SECONDS
    if contract_seconds:
        lock_after = min(lock_after, contract_seconds)
    return max(1, min(lock_after, lock_ceiling_seconds()))


def unknown_lock_roles() -> list[str]:
    """Names in READROOM_LOCK_AFTER_SECONDS_BY_ROLE that are no role (a typo would silently not apply)."""
    return sorted(set(settings.READROOM_LOCK_AFTER_SECONDS_BY_ROLE) - {role.name for role in Role})


def session_lock_after_set(session, seconds: int) -> None:
    """Give the session its lock time; written only when it changed (a session save per page is not free)."""
    if session.get(LOCK_AFTER_KEY) != seconds:
        session[LOCK_AFTER_KEY] = seconds


def session_activity(session) -> None:
    """The page reports activity (``POST /live/active/``): the server's record of it is now, and the
    session's idle end moves with it."""
    session[IdleSessionMiddleware.RENEWED_AT_KEY] = int(time.time())


def session_lock(request: HttpRequest) -> None:
    """Lock the session and keep it alive while locked, at most READROOM_LOCK_MAX_HOURS."""
    was_locked = bool(request.session.get(LOCKED_KEY))  # every window of the browser may ask
    session_lock_store(request.session)
    if not was_locked:
        screen_locked.send(sender=session_lock, user=request.user, session_key=request.session.session_key)


def session_unlock(request: HttpRequest, secret: str) -> bool:
    """True, and the session unlocked with its idle expiry back, when ``secret`` is the user's."""
    user = request.user
    secret = (secret or "").strip()
    if not user.is_authenticated or not secret:
        return False
    ok = False
    if requires_second_factor(user) and secret.isdigit() and len(secret) <= 8:
        device = match_token(user, secret)
        if device is not None:
            otp_login(request, device)
            ok = True
    if not ok:
        ok = authenticate(request, username=user.get_username(), password=secret) is not None
    if ok:
        request.session.pop(LOCKED_KEY, None)
        request.session.set_expiry(None)  # SESSION_COOKIE_AGE again: idleness counts from now
        session_activity(request.session)  # else the server's idle record would lock it at once
        request.session.save()
        screen_unlocked.send(sender=session_unlock, user=user, session_key=request.session.session_key)
    return ok
