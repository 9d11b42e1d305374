"""Whose facility contracts bind a user's screen lock (docs/alerts.md "Per facility, per role").

A facility's contract may ask for a shorter idle lock (``Facility.screen_lock_minutes``). It binds
everyone who may see that facility's studies: operations, the medical director and credentialing
staff (every facility), a facility admin (those they administer), a radiologist (those where they
hold a granted privilege, in force or not yet — stricter than "may read there today", and it does
not change at midnight or with a shift). The strictest wins; accounts.screen_lock adds the role
defaults and the session's idle ceiling."""

from __future__ import annotations

from django.db.models import Min, Q

from accounts.middleware import session_locked
from accounts.roles import Role, roles_of
from accounts.screen_lock import lock_after_seconds, session_lock_after_set
from credentialing.models import GRANTED_PRIVILEGE_STATUSES, FacilityPrivilege
from facilities.models import Facility
from facilities.selectors import facilities_visible_to


def contract_lock_seconds(user) -> int | None:
    """The strictest screen-lock contract among the active facilities the user sees, in seconds."""
    if not user.is_authenticated:
        return None
    privileged = FacilityPrivilege.objects.filter(profile__user=user, status__in=GRANTED_PRIVILEGE_STATUSES)
    seen = Q(pk__in=privileged.values("facility_id"))
    if user.is_superuser or roles_of(user) - {Role.RADIOLOGIST}:
        # a radiologist's own view (today's licence and privileges) is the privileges above
        seen |= Q(pk__in=facilities_visible_to(user).values("pk"))
    minutes = (
        Facility.objects.filter(seen, active=True, screen_lock_minutes__isnull=False)
        .aggregate(strictest=Min("screen_lock_minutes"))
        .get("strictest")
    )
    return None if minutes is None else minutes * 60


def screen_lock_seconds(user) -> int:
    """The user's effective lock time: role default, facility contracts, the idle ceiling."""
    return lock_after_seconds(user, contract_seconds=contract_lock_seconds(user))


def session_screen_lock_refresh(request) -> int:
    """Compute the user's lock time and give it to the session (the server enforces what the page
    shows). An already-locked session keeps its state; only the time is refreshed."""
    seconds = screen_lock_seconds(request.user)
    session = getattr(request, "session", None)
    if session is not None and not session_locked(session):
        session_lock_after_set(session, seconds)
    return seconds


def on_user_logged_in(sender, request, user, **kwargs) -> None:
    """At sign-in: the session's lock time from the start, before any page has been rendered."""
    if request is not None and getattr(request, "session", None) is not None:
        session_lock_after_set(request.session, screen_lock_seconds(user))
