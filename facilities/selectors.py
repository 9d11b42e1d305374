"""Which facilities a user may see or administer: the one place that decides it.

* operations, the medical director and credentialing staff: every facility (workflow metadata,
  QA and credentialing span all clients);
* a facility admin: only facilities they hold ``administer_facility`` on (django-guardian);
* radiologists: the facilities where they hold, now, privileges and a licence for the state
  (``credentialing.eligibility.reading_facility_ids``) — never from guardian.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from django.db.models import Q, QuerySet
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


def local_time_q(
    field: str, start: datetime | None, end: datetime | None, *, facility_path: str = "facility"
) -> Q:
    """``start <= field < end`` where the bounds are wall-clock times at each record's facility
    (naive datetimes; None: unbounded). A hospital asking for "1 March" means its own day, and the
    facilities a caller sees may sit in several zones: one clause per zone, each bounded in it."""
    clauses = Q(pk__in=[])
    # order_by(): Facility's default ordering would make DISTINCT one row per facility, not per zone
    for zone_name in Facility.objects.order_by().values_list("timezone", flat=True).distinct():
        zone = ZoneInfo(zone_name)
        clause = Q(**{f"{facility_path}__timezone": zone_name, f"{field}__isnull": False})
        if start is not None:
            clause &= Q(**{f"{field}__gte": start.replace(tzinfo=zone)})
        if end is not None:
            clause &= Q(**{f"{field}__lt": end.replace(tzinfo=zone)})
        clauses |= clause
    return clauses
