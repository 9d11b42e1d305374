"""Locking and unlocking a session's screen (issue 14, docs/alerts.md; enforced by
``accounts.middleware.ScreenLockMiddleware``).

Unlocking is one step on the same session: signing roles (who have an authenticator) give the current
code; everyone else, or a signing role who prefers it, the password. A password goes through
``authenticate()``, so django-axes counts failures and locks out as on the login page; a code through
django-otp's ``match_token``, which throttles repeated failures."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate
from django.http import HttpRequest
from django_otp import login as otp_login
from django_otp import match_token

from accounts.middleware import LOCKED_KEY
from accounts.roles import requires_second_factor
from accounts.signals import screen_locked, screen_unlocked


def session_lock(request: HttpRequest) -> None:
    """Lock the session and keep it alive while locked, at most READROOM_LOCK_MAX_HOURS."""
    was_locked = bool(request.session.get(LOCKED_KEY))  # every window of the browser may ask
    request.session[LOCKED_KEY] = True
    request.session.set_expiry(int(settings.READROOM_LOCK_MAX_HOURS * 3600))
    # stored now, not at the response: the session's sockets are told next and re-read it later
    request.session.save()
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
        request.session.save()
        screen_unlocked.send(sender=session_unlock, user=user, session_key=request.session.session_key)
    return ok
