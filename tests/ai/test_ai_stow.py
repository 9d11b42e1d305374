"""AI results by STOW-RS (the hospital's PACS account posting what its AI node made): a highdicom SEG
of an ICH segment raises the stored CT head like the SR does; a KOS from the algorithm adds its
flagged image to the study's AI results and moves nothing; another facility's account posting a SEG
that names this study is refused, its object kept in quarantine, the study untouched."""

from __future__ import annotations

from datetime import timedelta
from io import BytesIO

import pytest
from django.utils import timezone

from imaging.models import AiFinding, AiResult, Study
from imaging.services import studies_complete_quiet
from interfaces.dicom.receive import dicom_instance_receive
from interfaces.models import QuarantinedObject
from tests.ai_data import ai_kos, ai_seg
from tests.dicom_data import ct_series
from tests.interfaces.test_dicomweb import multipart, stow
from worklist.models import StudyEvent, StudyEventKind

pytestmark = pytest.mark.django_db(transaction=True)


def part10(ds) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def routed_head_ct(chicago, image_store):
    ct = ct_series(count=3, accession="ACC-STOW-AI")
    for data in ct.part10():
        assert dicom_instance_receive(facility=chicago, part10=data).ok
    studies_complete_quiet(now=timezone.now() + timedelta(hours=1))
    study = Study.objects.get(study_instance_uid=ct.study_uid)
    assert study.worklist_routed and study.priority == "ROUTINE"
    return ct, study


def test_an_ich_seg_by_stow_raises_the_study(client, admin_chicago, routed_head_ct, lakeshore_ai_rules):
    ct, study = routed_head_ct
    client.force_login(admin_chicago)
    # when the PACS account posts the algorithm's segmentation
    response = stow(client, multipart(part10(ai_seg(list(ct.datasets)))))
    assert response.status_code == 200, response.content
    # then it is an AI result (a SEG) with the segment's finding and the flagged image
    result = AiResult.objects.get(study=study)
    assert (result.source, result.manufacturer, result.model) == ("seg", "Aidoc", "BriefCase ICH")
    finding = AiFinding.objects.get(result=result)
    assert (finding.code_value, finding.present, finding.probability) == ("274100004", True, None)
    assert finding.referenced_sop_instance_uids == [ct.sop_uids[1]]
    # and the study is STAT, first within STAT, with the because
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("STAT", 0)
    event = StudyEvent.objects.get(study=study, kind=StudyEventKind.AI_RERANKED)
    assert "Cerebral hemorrhage positive → STAT" in event.detail["because"]
    assert study.number_of_instances == 3  # a derived object, not one of its images


def test_a_kos_by_stow_flags_images_and_moves_nothing(
    client, admin_chicago, routed_head_ct, lakeshore_ai_rules
):
    ct, study = routed_head_ct
    client.force_login(admin_chicago)
    response = stow(client, multipart(part10(ai_kos(list(ct.datasets)))))
    assert response.status_code == 200, response.content
    result = AiResult.objects.get(study=study)
    assert (result.source, result.referenced_sop_instance_uids) == ("kos", [ct.sop_uids[1]])
    assert not AiFinding.objects.exists()
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("ROUTINE", 1)


def test_another_facilitys_account_is_refused_and_the_study_untouched(
    client, admin_lakeview, lakeview, routed_head_ct, lakeshore_ai_rules
):
    ct, study = routed_head_ct
    seg = ai_seg(list(ct.datasets))
    client.force_login(admin_lakeview)
    # when Lakeview's account posts a SEG naming Lakeshore's study
    response = stow(client, multipart(part10(seg)))
    # then the part is refused with 0xC220, kept in quarantine with the reason, and nothing moves
    assert response.status_code == 409, response.content
    failed = response.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed] == [0xC220]
    kept = QuarantinedObject.objects.get(sop_instance_uid=seg.SOPInstanceUID)
    assert kept.facility == lakeview
    assert "not stored here" in kept.reason
    assert not AiResult.objects.exists()
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("ROUTINE", 1)
