"""``{% live_channel %}``: the per-user live channel every page carries (templates/base.html and
OHIF's page, docs/alerts.md) — the alert banner's place and static/readroom/live.js with what it
needs as data- attributes (no inline script: a CSP is coming)."""

from __future__ import annotations

from django import template
from django.urls import reverse

from accounts.middleware import LOCK_AFTER_KEY, session_lock_after, session_locked
from accounts.roles import requires_second_factor
from accounts.second_factor import session_is_verified
from credentialing.screen_lock import session_screen_lock_refresh
from worklist.live import LOCKED_STUDY_FIELDS, steps_for

register = template.Library()


def _template(name: str, *args) -> str:
    return reverse(name, args=[0, *args]).replace("/0/", "/{id}/")


def _lock_after(request) -> int:
    """The user's effective lock time (role, facility contracts, idle ceiling) as the session holds
    it — computed at sign-in and refreshed by the page's heartbeat (/live/active/), so a page render
    costs no query for it; computed here only for a session that has none yet."""
    if LOCK_AFTER_KEY in request.session:
        return session_lock_after(request.session)
    return session_screen_lock_refresh(request)


@register.inclusion_tag("live/_banner.html", takes_context=True)
def live_channel(context) -> dict:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"on": False}
    session = getattr(request, "session", None)
    verified = user.is_verified() if hasattr(user, "is_verified") else session_is_verified(session, user)
    if requires_second_factor(user) and not verified:
        # the authenticator-code step: nothing to alert yet, and the socket would refuse (4403)
        return {"on": False}
    return {
        "on": True,
        # OHIF's page: over the app (it has no ReadRoom navigation to keep clear), see live.css
        "overlay": bool(context.get("live_overlay")),
        "user_id": user.pk,
        "steps": " ".join(steps_for(user)),
        "pending_url": reverse("worklist:live_pending"),
        "ack_url": reverse("worklist:live_acknowledge"),
        "claim_url": _template("worklist-claim"),
        "open_url": _template("imaging:open"),
        "csrf_token": context.get("csrf_token", ""),
        "lock_url": reverse("worklist:live_lock"),
        "unlock_url": reverse("worklist:live_unlock"),
        "active_url": reverse("worklist:live_active"),
        "lock_after": _lock_after(request),
        # what a locked page may keep of a study: the socket's own projection's fields, one list
        "locked_fields": " ".join(LOCKED_STUDY_FIELDS),
        "locked": session_locked(getattr(request, "session", None)),
        "signing": requires_second_factor(user),
    }
