"""Operations' page of DICOM associations and the quarantine decisions (issue 19)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from imaging.storage import encrypted_write
from interfaces.dicom.quarantine import QuarantineRefused, quarantine_discard, quarantine_release
from interfaces.models import DicomAssociation, QuarantinedObject

pytestmark = pytest.mark.django_db


@pytest.fixture
def quarantined(chicago, image_store):
    association = DicomAssociation.objects.create(
        facility=chicago, calling_ae_title="LAKESHORE_CT1", started_at=timezone.now(), instances_failed=1
    )
    stored = encrypted_write("quarantine/test.bin", b"not DICOM at all")
    return QuarantinedObject.objects.create(
        received_at=timezone.now(),
        association=association,
        facility=chicago,
        reason="not a DICOM dataset",
        storage_path=stored.relative_path,
        storage_key_id=stored.key_id,
        size_bytes=stored.size_bytes,
    )


def test_a_release_that_is_still_refused_leaves_it_in_quarantine_and_a_discard_is_recorded(
    quarantined, ops_omar
):
    with pytest.raises(QuarantineRefused, match="Give a reason"):
        quarantine_discard(object_id=quarantined.pk, by=ops_omar, reason="")
    with pytest.raises(QuarantineRefused, match="Still refused"):
        quarantine_release(object_id=quarantined.pk, by=ops_omar, reason="order arrived")
    assert QuarantinedObject.objects.get() == quarantined  # no second row
    quarantined.refresh_from_db()
    assert quarantined.resolved_at is None
    quarantine_discard(object_id=quarantined.pk, by=ops_omar, reason="test pattern from the vendor")
    quarantined.refresh_from_db()
    assert (quarantined.resolution, quarantined.resolved_by, quarantined.resolution_reason) == (
        "discarded",
        ops_omar,
        "test pattern from the vendor",
    )
    with pytest.raises(QuarantineRefused, match="Already discarded"):
        quarantine_discard(object_id=quarantined.pk, by=ops_omar, reason="again")


def test_the_page_lists_associations_by_ae_for_operations_only(client, quarantined, ops_omar, admin_chicago):
    client.force_login(ops_omar)
    page = client.get("/operations/interfaces/dicom/", {"ae": "lakeshore_ct1"})
    assert page.status_code == 200
    assert b"LAKESHORE_CT1" in page.content and b"not a DICOM dataset" in page.content
    client.force_login(admin_chicago)
    assert client.get("/operations/interfaces/dicom/").status_code == 403
    url = f"/operations/interfaces/quarantine/{quarantined.pk}/"
    assert client.post(url, {"decision": "discard", "reason": "x"}).status_code == 403
    quarantined.refresh_from_db()
    assert quarantined.resolved_at is None
