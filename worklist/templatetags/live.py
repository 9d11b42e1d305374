"""``{% live_channel %}``: the per-user live channel every page carries (templates/base.html and
OHIF's page, docs/alerts.md) — the alert banner's place and static/readroom/live.js with what it
needs as data- attributes (no inline script: a CSP is coming)."""

from __future__ import annotations

from django import template
from django.conf import settings
from django.urls import reverse

from accounts.middleware import session_locked
from accounts.roles import requires_second_factor
from accounts.second_factor import session_is_verified
from worklist.live import steps_for

register = template.Library()


def _template(name: str, *args) -> str:
    return reverse(name, args=[0, *args]).replace("/0/", "/{id}/")


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
        "lock_after": settings.READROOM_LOCK_AFTER_SECONDS,
        "locked": session_locked(getattr(request, "session", None)),
        "signing": requires_second_factor(user),
    }
