"""AI results by C-STORE, dcmtk's storescu as the AI node: a TID 1500 SR made with highdicom after its
CT moves the study (STAT, first within STAT, with the because); a negative SR changes nothing; a
result after the claim tells the holder over their live channel and moves nothing; a malformed SR
is quarantined with its reason and answered 0xC210; another facility's result never touches a study."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from facilities.models import DicomSender
from imaging.models import AiFinding, AiResult, Study
from imaging.services import order_message_apply, studies_complete_quiet
from interfaces.hl7.parse import parse
from interfaces.models import QuarantinedObject
from tests import hl7_data
from tests.ai_data import ai_sr
from tests.conftest import make_radiologist
from tests.dicom_data import ct_series
from tests.worklist.conftest import make_study
from worklist.groups import user_group
from worklist.models import StudyAssignment, StudyEvent, StudyEventKind
from worklist.selectors import worklist_for
from worklist.services import study_route

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
]


def storescu(scp, calling: str, *paths: Path) -> subprocess.CompletedProcess:
    host, port, aet = scp
    return subprocess.run(
        ["storescu", "-v", "-R", "-aet", calling, "-aec", aet, host, str(port), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(tmp_path: Path, datasets) -> list[Path]:
    paths = []
    for ds in datasets:
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def routed_ct(dicom_scp, tmp_path, accession: str = "ACC-AI1"):
    """A CT head stored by the modality, complete and on the worklist."""
    ct = ct_series(count=3, accession=accession)
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, ct.datasets)).returncode == 0
    studies_complete_quiet(now=timezone.now() + timedelta(hours=1))
    study = Study.objects.get(study_instance_uid=ct.study_uid)
    assert study.worklist_routed
    return ct, study


def wait_for(predicate, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def test_an_ich_positive_sr_raises_the_study_to_stat_first_within_stat(
    dicom_scp, tmp_path, chicago, lakeshore_ai_rules, ops_omar
):
    # given a STAT study already waiting, due sooner than anything else
    waiting = make_study(chicago, priority="STAT", completed_at=timezone.now() - timedelta(minutes=20))
    study_route(study_id=waiting.pk)
    # and a routine CT head from the modality, on the worklist below it
    ct, study = routed_ct(dicom_scp, tmp_path)
    assert study.priority == "ROUTINE"
    # when the AI node stores its SR (ICH present, p = 0.93)
    sr = ai_sr(list(ct.datasets))
    result = storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, [sr]))
    assert result.returncode == 0, result.stderr
    # then the result is kept with the algorithm's identity, the coded finding and the images
    found = wait_for(lambda: AiResult.objects.filter(study=study).first())
    assert (found.manufacturer, found.model, found.version) == ("Aidoc", "BriefCase ICH", "2.1")
    finding = AiFinding.objects.get(result=found)
    assert (finding.code_value, finding.coding_scheme, finding.present) == ("274100004", "SCT", True)
    assert finding.probability == pytest.approx(0.93)
    assert finding.referenced_sop_instance_uids == [ct.sop_uids[1]]
    # and the study is STAT, ranked first within STAT, with the because
    event = wait_for(lambda: StudyEvent.objects.filter(study=study, kind=StudyEventKind.AI_RERANKED).first())
    assert event.detail["because"] == (
        "AI: Aidoc BriefCase ICH 2.1 Cerebral hemorrhage positive (p=0.93) → STAT, first within STAT"
    )
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("STAT", 0)
    order = [s.pk for s in worklist_for(ops_omar, at=timezone.now()) if s.priority == "STAT"]
    assert order == [study.pk, waiting.pk]
    # and the SR is kept with the study without counting as one of its images
    assert study.number_of_instances == 3
    # a resend of the same SR records nothing twice
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, [sr])).returncode == 0
    assert AiResult.objects.filter(study=study).count() == 1


def test_a_negative_sr_changes_nothing(dicom_scp, tmp_path, lakeshore_ai_rules):
    ct, study = routed_ct(dicom_scp, tmp_path)
    events_before = StudyEvent.objects.filter(study=study).count()
    # when the AI says: ICH absent
    sr = ai_sr(list(ct.datasets), present=False, probability=0.04)
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, [sr])).returncode == 0
    # then the result is kept, negative — and the study is where it was
    finding = wait_for(lambda: AiFinding.objects.filter(result__study=study).first())
    assert finding.present is False
    time.sleep(0.3)
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("ROUTINE", 1)
    assert StudyEvent.objects.filter(study=study).count() == events_before


def test_a_result_after_the_claim_tells_the_holder_and_moves_nothing(
    dicom_scp, tmp_path, chicago, lakeshore_ai_rules
):
    ct, study = routed_ct(dicom_scp, tmp_path)
    holder = make_radiologist("dr_holder", "neuro")
    # given the study is claimed (as study_claim leaves it)
    StudyAssignment.objects.filter(study=study).update(claimed_by=holder, claimed_at=timezone.now())
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(user_group(holder.pk), channel)
    # when the ICH-positive SR arrives
    sr = ai_sr(list(ct.datasets))
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, [sr])).returncode == 0
    # then the holder hears a study.ai_result on their own channel
    message = async_to_sync(lambda: asyncio.wait_for(layer.receive(channel), 10))()
    event = message["event"]
    assert event["type"] == "study.ai_result" and event["study"]["id"] == study.pk
    assert "Cerebral hemorrhage positive (p=0.93)" in event["findings"][0]
    # and the study is not re-ranked; an ai_notified event says why
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("ROUTINE", 1)
    notified = StudyEvent.objects.get(study=study, kind=StudyEventKind.AI_NOTIFIED)
    assert notified.detail["holder"] == holder.pk
    assert not StudyEvent.objects.filter(study=study, kind=StudyEventKind.AI_RERANKED).exists()


def responses(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if "Received Store Response" in line]


def test_a_malformed_sr_is_quarantined_with_its_reason_and_refused_c210(
    dicom_scp, tmp_path, lakeshore_ai_rules
):
    ct, _ = routed_ct(dicom_scp, tmp_path)
    # an SR whose probability is 1.7 (not a probability)
    sr = ai_sr(list(ct.datasets), probability=1.7)
    result = storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, [sr]))
    # then the SCU hears 0xC210 and the object is kept in quarantine with the reason
    [response] = responses(result)
    assert "0xC210" in response or "CannotUnderstand" in response, response
    kept = QuarantinedObject.objects.get(sop_instance_uid=sr.SOPInstanceUID)
    assert "probability 1.7 outside" in kept.reason
    assert not AiResult.objects.exists()


def test_a_facility_b_result_never_touches_a_facility_a_study(
    dicom_scp, tmp_path, chicago, lakeview, lakeshore_ai_rules
):
    DicomSender.objects.create(facility=lakeview, ae_title="LAKEVIEW_AI")
    ct, study = routed_ct(dicom_scp, tmp_path)
    # when Lakeview's AI node sends an ICH-positive SR naming Lakeshore's study
    sr = ai_sr(list(ct.datasets))
    result = storescu(dicom_scp, "LAKEVIEW_AI", *write(tmp_path, [sr]))
    # then it is refused (conflict), quarantined, and Lakeshore's study is untouched
    [response] = responses(result)
    # (storescu -v names the 0xC2xx class "CannotUnderstand"; the kept reason tells 0xC220's why)
    assert "0xC220" in response or "CannotUnderstand" in response, response
    kept = QuarantinedObject.objects.get(sop_instance_uid=sr.SOPInstanceUID)
    assert kept.facility == lakeview and "not stored here" in kept.reason
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("ROUTINE", 1)
    assert not AiResult.objects.exists()


def reading_order(user) -> list[int]:
    return [s.pk for s in worklist_for(user, at=timezone.now())]


def test_an_lvo_positive_sr_on_a_cta_makes_it_a_stroke_first_on_the_worklist(
    dicom_scp, tmp_path, chicago, lakeshore_ai_rules, ops_omar
):
    from tests.ai_data import LVO

    # given a STAT study waiting, and a routine CTA head/neck from the modality below it
    waiting = make_study(chicago, priority="STAT", completed_at=timezone.now() - timedelta(minutes=20))
    study_route(study_id=waiting.pk)
    cta = ct_series(count=3, accession="ACC-LVO1", study_description="CTA HEAD NECK")
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, cta.datasets)).returncode == 0
    studies_complete_quiet(now=timezone.now() + timedelta(hours=1))
    study = Study.objects.get(study_instance_uid=cta.study_uid)
    assert reading_order(ops_omar) == [waiting.pk, study.pk]
    # when the AI node stores an LVO-positive SR over a real association
    sr = ai_sr(
        list(cta.datasets), finding=LVO, probability=0.88, manufacturer="Viz.ai", model="LVO", version="5"
    )
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, [sr])).returncode == 0
    # then it is a code stroke, first on the worklist, with the because
    event = wait_for(lambda: StudyEvent.objects.filter(study=study, kind=StudyEventKind.AI_RERANKED).first())
    assert "Viz.ai LVO 5 Occlusion of cerebral artery positive (p=0.88) → STROKE" in event.detail["because"]
    study.refresh_from_db()
    assert study.priority == "STROKE"
    assert reading_order(ops_omar) == [study.pk, waiting.pk]


def test_an_lvo_sr_on_a_plain_head_ct_moves_nothing(dicom_scp, tmp_path, lakeshore_ai_rules, ops_omar):
    from tests.ai_data import LVO

    # the rule is for CTAs only: the same finding on a non-contrast head CT is kept, not acted on
    ct, study = routed_ct(dicom_scp, tmp_path)
    sr = ai_sr(list(ct.datasets), finding=LVO, probability=0.88)
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, [sr])).returncode == 0
    wait_for(lambda: AiFinding.objects.filter(result__study=study).exists())
    time.sleep(0.3)
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("ROUTINE", 1)
    assert not StudyEvent.objects.filter(study=study, kind=StudyEventKind.AI_RERANKED).exists()


def test_a_pe_positive_sr_ranks_the_ctpa_first_within_its_class_without_a_class_change(
    dicom_scp, tmp_path, chicago, lakeshore_ai_rules, ops_omar
):
    from tests.ai_data import PE

    # given a STAT study, a routine study due sooner, and a routine CTPA from the modality last
    stat = make_study(chicago, priority="STAT", completed_at=timezone.now() - timedelta(minutes=5))
    study_route(study_id=stat.pk)
    routine = make_study(chicago, completed_at=timezone.now() - timedelta(hours=3))
    study_route(study_id=routine.pk)
    ctpa = ct_series(count=3, accession="ACC-PE1", study_description="CTA CHEST PE PROTOCOL")
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, ctpa.datasets)).returncode == 0
    studies_complete_quiet(now=timezone.now() + timedelta(hours=1))
    study = Study.objects.get(study_instance_uid=ctpa.study_uid)
    assert reading_order(ops_omar) == [stat.pk, routine.pk, study.pk]
    # when the AI node stores a PE-positive SR
    sr = ai_sr(list(ctpa.datasets), finding=PE, probability=0.71, manufacturer="Aidoc", model="BriefCase PE")
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, [sr])).returncode == 0
    # then it is first within ROUTINE — still ROUTINE, still below the STAT study
    event = wait_for(lambda: StudyEvent.objects.filter(study=study, kind=StudyEventKind.AI_RERANKED).first())
    assert "Pulmonary embolism positive (p=0.71)" in event.detail["because"]
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("ROUTINE", 0)
    assert reading_order(ops_omar) == [stat.pk, study.pk, routine.pk]


def test_an_sr_that_comes_before_its_ct_is_kept_and_applied_when_the_ct_arrives(
    dicom_scp, tmp_path, chicago, lakeview, lakeshore_ai_rules, ops_omar
):
    # given a STAT study already waiting, due sooner than anything else
    waiting = make_study(chicago, priority="STAT", completed_at=timezone.now() - timedelta(minutes=20))
    study_route(study_id=waiting.pk)
    ct = ct_series(count=3, accession="ACC-EARLY1")
    sr = ai_sr(list(ct.datasets))
    # and Lakeview's AI node naming the same (not yet stored) study: kept for Lakeview only
    DicomSender.objects.create(facility=lakeview, ae_title="LAKEVIEW_AI")
    other = ai_sr(list(ct.datasets))
    assert storescu(dicom_scp, "LAKEVIEW_AI", *write(tmp_path, [other])).returncode == 0
    # when Lakeshore's AI node stores its ICH-positive SR before the modality's CT has come
    result = storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, [sr]))
    # then the node hears Success (it is kept, not refused) and nothing is linked yet
    [response] = responses(result)
    assert "0x0000" in response or "Success" in response, response
    kept = QuarantinedObject.objects.get(sop_instance_uid=sr.SOPInstanceUID)
    assert kept.waiting_for_study and kept.facility == chicago and kept.study_instance_uid == ct.study_uid
    assert not AiResult.objects.exists() and not Study.objects.filter(study_instance_uid=ct.study_uid)
    # when the CT arrives over its own association
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, ct.datasets)).returncode == 0
    # then the SR is linked to the study, with the badge, and the triage rule applied with its because
    study = Study.objects.get(study_instance_uid=ct.study_uid)
    found = wait_for(lambda: AiResult.objects.filter(study=study).first())
    assert found.sop_instance_uid == sr.SOPInstanceUID and found.facility == chicago
    event = wait_for(lambda: StudyEvent.objects.filter(study=study, kind=StudyEventKind.AI_RERANKED).first())
    assert event.detail["because"] == (
        "AI: Aidoc BriefCase ICH 2.1 Cerebral hemorrhage positive (p=0.93) → STAT, first within STAT"
    )
    kept.refresh_from_db()
    assert (kept.resolution, kept.waiting_for_study) == ("linked", True) and kept.resolved_at
    # and once complete it is routed STAT, first within STAT, its SR not counted as an image
    studies_complete_quiet(now=timezone.now() + timedelta(hours=1))
    study.refresh_from_db()
    assert (study.priority, study.triage_rank, study.number_of_instances) == ("STAT", 0, 3)
    assert study.ai_badge == "Cerebral hemorrhage p=0.93 · Aidoc BriefCase ICH 2.1"
    order = [s.pk for s in worklist_for(ops_omar, at=timezone.now()) if s.priority == "STAT"]
    assert order == [study.pk, waiting.pk]
    # and Lakeview's result still waits: it never touched Lakeshore's study
    theirs = QuarantinedObject.objects.get(sop_instance_uid=other.SOPInstanceUID)
    assert theirs.facility == lakeview and theirs.waiting_for_study and theirs.resolved_at is None
    assert AiResult.objects.count() == 1


def test_an_lvo_sr_before_its_cta_makes_a_code_stroke_routed_at_the_ctas_first_image(
    dicom_scp, tmp_path, lakeshore_ai_rules, ops_omar
):
    from tests.ai_data import LVO
    from worklist.models import EscalationStep, StudyEscalation

    cta = ct_series(count=3, accession="ACC-LVO-EARLY", study_description="CTA HEAD NECK")
    sr = ai_sr(
        list(cta.datasets), finding=LVO, probability=0.88, manufacturer="Viz.ai", model="LVO", version="5"
    )
    # given the AI node's LVO-positive SR kept before its CTA
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, [sr])).returncode == 0
    # when the CTA's images arrive (no quiet period waited for)
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, cta.datasets)).returncode == 0
    # then it is a code stroke on the worklist at once, first, with the code-stroke alert
    study = Study.objects.get(study_instance_uid=cta.study_uid)
    assert wait_for(lambda: Study.objects.get(pk=study.pk).worklist_routed)
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("STROKE", 0)
    assert reading_order(ops_omar)[0] == study.pk
    assert StudyEscalation.objects.filter(study=study, step=EscalationStep.STROKE_ALERT).exists()


def test_an_order_after_the_ai_raise_does_not_lower_the_class(
    dicom_scp, tmp_path, chicago, lakeshore_ai_rules
):
    # given a CT head stored before its order, raised to STAT by an ICH-positive SR
    ct, study = routed_ct(dicom_scp, tmp_path, accession="ACC-AI9")
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, [ai_sr(list(ct.datasets))])).returncode == 0
    wait_for(lambda: Study.objects.filter(pk=study.pk, priority="STAT").exists())
    # when the hospital's routine order for it arrives (ORC-7 priority R)
    order = hl7_data.orm("NW", accession="ACC-AI9", placer="P-AI9", filler="F-AI9", priority="R")
    order_message_apply(facility=chicago, message=parse(order.encode()).content)
    # then the study has its routine order, and the AI's raise holds (rules only ever raise)
    study.refresh_from_db()
    assert study.order is not None and study.order.priority == "ROUTINE"
    assert (study.priority, study.triage_rank) == ("STAT", 0)
