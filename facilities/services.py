"""Writes to facilities."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from accounts.roles import Role
from facilities.models import Facility
from facilities.selectors import ADMINISTER


@transaction.atomic
def facility_admin_grant(*, user, facility: Facility) -> None:
    """Make ``user`` an administrator of ``facility`` (and only of it)."""
    user.groups.add(Group.objects.get(name=Role.FACILITY_ADMIN))
    assign_perm(ADMINISTER, user, facility)


@transaction.atomic
def facility_admin_revoke(*, user, facility: Facility) -> None:
    remove_perm(ADMINISTER, user, facility)
