"""Which facilities a user may see or administer: the one place that decides it.

* operations, the medical director and credentialing staff: every facility (workflow metadata,
  QA and credentialing span all clients);
* a facility admin: only facilities they hold ``administer_facility`` on (django-guardian);
* radiologists: the facilities where they hold, now, privileges and a licence for the state
  (``credentialing.eligibility.reading_facility_ids``) — never from guardian.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404
from guardian.shortcuts import get_objects_for_user

from accounts.roles import Role, has_role
from facilities.models import Facility

ADMINISTER = "facilities.administer_facility"
_ALL_FACILITY_ROLES = (Role.OPERATIONS, Role.MEDICAL_DIRECTOR, Role.CREDENTIALING)


def facilities_visible_to(user) -> QuerySet[Facility]:
    if not user.is_authenticated:
        return Facility.objects.none()
    if user.is_superuser or has_role(user, *_ALL_FACILITY_ROLES):
        return Facility.objects.all()
    if has_role(user, Role.FACILITY_ADMIN):
        return facilities_administered_by(user)
    if has_role(user, Role.RADIOLOGIST):
        # Imported here: credentialing's selectors import this module.
        from django.utils import timezone

        from credentialing.eligibility import reading_facility_ids

        return Facility.objects.filter(pk__in=reading_facility_ids(user, timezone.now()))
    return Facility.objects.none()


def facilities_administered_by(user) -> QuerySet[Facility]:
    """Facilities whose settings this user may change. Operations look after every client's
    configuration; a facility admin only their own (object permission, never model-wide)."""
    if not user.is_authenticated:
        return Facility.objects.none()
    if user.is_superuser or has_role(user, Role.OPERATIONS):
        return Facility.objects.all()
    if has_role(user, Role.FACILITY_ADMIN):
        return get_objects_for_user(user, ADMINISTER, klass=Facility, accept_global_perms=False)
    return Facility.objects.none()


def access_facility(user, code: str) -> Facility:
    """Fetch a facility the user may see, or 404 — the same answer whether it does not exist or
    belongs to someone else, so codes of other clients cannot be probed."""
    facility = facilities_visible_to(user).filter(code=code).first()
    if facility is None:
        raise Http404("No such facility")
    return facility


def can_administer_facility(user, facility: Facility) -> bool:
    return facilities_administered_by(user).filter(pk=facility.pk).exists()
