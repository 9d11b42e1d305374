"""The demo credentials load on top of the demo cast, twice without duplicates, and give the
workspace something to show."""

import pytest

from credentialing.demo import credentialing_demo_load
from credentialing.models import FacilityPrivilege, PrivilegeStatus, StateLicence
from radiology.demo import demo_load
from worklist.models import Shift

pytestmark = pytest.mark.django_db


def test_demo_credentials_are_idempotent():
    demo_load()
    assert credentialing_demo_load() == 9
    counts = (StateLicence.objects.count(), FacilityPrivilege.objects.count(), Shift.objects.count())
    credentialing_demo_load()
    assert (StateLicence.objects.count(), FacilityPrivilege.objects.count(), Shift.objects.count()) == counts
    assert FacilityPrivilege.objects.filter(status=PrivilegeStatus.APPLIED).count() == 1
    assert FacilityPrivilege.objects.filter(status=PrivilegeStatus.APPROVED_BY_PROXY).count() == 1
