"""The five roles of DESIGN.md §1, as Django groups.

A role says what kind of work a person does; which facilities they may touch is decided per object
(selectors in each app). Code asks ``has_role(user, Role.OPERATIONS)``, never a group name."""

from __future__ import annotations

from enum import StrEnum

from django.contrib.auth.models import AnonymousUser


class Role(StrEnum):
    RADIOLOGIST = "Radiologist"
    MEDICAL_DIRECTOR = "Medical director"
    CREDENTIALING = "Credentialing staff"
    FACILITY_ADMIN = "Facility admin"
    OPERATIONS = "Operations"


# Roles whose members sign final reads or adjudicate peer review: they must use a second factor.
SECOND_FACTOR_ROLES = frozenset({Role.RADIOLOGIST, Role.MEDICAL_DIRECTOR})

# Model permissions each role's group holds (granted by migration accounts/0002). Facility scope
# is never model-wide: facility admins get per-object permissions through django-guardian.
ROLE_MODEL_PERMISSIONS: dict[Role, list[str]] = {
    Role.RADIOLOGIST: [],
    Role.MEDICAL_DIRECTOR: ["facilities.view_facility"],
    Role.CREDENTIALING: [
        "facilities.view_facility",
        "credentialing.view_radiologistprofile",
        "credentialing.change_radiologistprofile",
        "credentialing.add_radiologistprofile",
        # Browsing in the admin; changes go through the credentialing workspace (its services
        # enforce the privilege workflow and the checklist).
        "credentialing.view_statelicence",
        "credentialing.view_boardcertification",
        "credentialing.view_fellowship",
        "credentialing.view_dearegistration",
        "credentialing.view_malpracticecoverage",
        "credentialing.view_document",
        "credentialing.view_facilityprivilege",
        "credentialing.view_facilitycredentialing",
        "worklist.view_shift",
    ],
    Role.FACILITY_ADMIN: ["facilities.view_facility", "facilities.change_facility"],
    Role.OPERATIONS: [
        "facilities.view_facility",
        "facilities.change_facility",
        "facilities.add_facility",
        # The rota (coverage shifts) until routing brings its own pages.
        "worklist.view_shift",
        "worklist.add_shift",
        "worklist.change_shift",
        "worklist.delete_shift",
        # repeating templates and time off (they write Shift rows through worklist.coverage)
        "worklist.view_shifttemplate",
        "worklist.add_shifttemplate",
        "worklist.change_shifttemplate",
        "worklist.delete_shifttemplate",
        "worklist.view_timeoff",
        "worklist.add_timeoff",
    ],
}


def roles_of(user) -> frozenset[Role]:
    """The user's roles, read once per request object."""
    if isinstance(user, AnonymousUser) or not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_readroom_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = frozenset(role for role in Role if role.value in names)
        user._readroom_roles = cached
    return cached


def has_role(user, *roles: Role) -> bool:
    return bool(roles_of(user) & set(roles))


def requires_second_factor(user) -> bool:
    return bool(roles_of(user) & SECOND_FACTOR_ROLES)
