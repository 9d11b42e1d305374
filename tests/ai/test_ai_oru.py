"""An AI node's ORU^R01 over real MLLP (the existing listener): an ICH-positive OBX raises the study
like the SR does; an ORU from a sender not onboarded as an AI node is refused (AR); another
facility's study is never touched. An ORU before its study waits (ACK AA, *waiting* in the message
browser) and is applied when the study's first image is stored at its facility — by storescu or
STOW-RS — and never at another facility; one whose study never comes is dead-lettered after
READROOM_AI_ORU_WAIT_HOURS, on the operations interfaces page."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from facilities.models import Hl7Sender
from imaging.models import AiFinding, AiResult, Study
from imaging.services import studies_complete_quiet
from interfaces.hl7.inbound import ai_orus_waiting_expire, sender_cache_clear
from interfaces.models import InboundMessage, InboundStatus, InterfaceAlert, InterfaceKind
from tests.ai.test_ai_sr_scp import storescu, wait_for, write
from tests.ai.test_ai_stow import part10
from tests.ai_data import ai_oru
from tests.dicom_data import ct_series
from tests.interfaces.test_dicomweb import multipart, stow
from tests.interfaces.test_hl7_listener import err_code, exchange, msa
from tests.worklist.conftest import make_study
from worklist.models import StudyEvent, StudyEventKind
from worklist.services import study_route

pytestmark = pytest.mark.django_db(transaction=True)

# Both listener modes (the embedded inbox thread, and the command's inline inbox) are run by the
# first test(s) here and by tests/interfaces/test_hl7_listener.py; the rest of this module runs the
# deployed one only (``manage.py hl7_listener``): the same path twice cost ~1 min of the suite.
ONE_LISTENER_MODE = pytest.mark.parametrize("hl7_listener", ["inline"], indirect=True)


@pytest.fixture
def aidoc_node(chicago_interfaces):
    Hl7Sender.objects.create(
        facility=chicago_interfaces, sending_application="AIDOC", sending_facility="LAKESHORE", ai_node=True
    )
    sender_cache_clear()


def routed(facility):
    study = make_study(facility, code="70450", text="CT HEAD WO CONTRAST", completed_at=timezone.now())
    study_route(study_id=study.pk)
    return study


def test_an_ich_positive_oru_from_the_ai_node_raises_the_study(
    hl7_listener, aidoc_node, chicago, lakeshore_ai_rules
):
    study = routed(chicago)
    # when the AI node sends its result for the accession
    [ack] = exchange(hl7_listener, ai_oru(accession=study.accession_number))
    # then it is accepted and recorded with the algorithm and the coded finding
    assert msa(ack)[0] == "AA"
    result = AiResult.objects.get(study=study)
    assert (result.source, result.manufacturer, result.model, result.version) == (
        "hl7",
        "Aidoc",
        "BriefCase ICH",
        "2.1",
    )
    finding = AiFinding.objects.get(result=result)
    assert (finding.code_value, finding.present, finding.probability) == ("274100004", True, 0.93)
    # and (routing hears of it after the apply commits) the study is STAT, first within STAT
    event = wait_for(lambda: StudyEvent.objects.filter(study=study, kind=StudyEventKind.AI_RERANKED).first())
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("STAT", 0)
    assert event.detail["because"].startswith(
        "AI: Aidoc BriefCase ICH 2.1 Cerebral hemorrhage positive (p=0.93)"
    )


@ONE_LISTENER_MODE
def test_a_negative_oru_changes_nothing(hl7_listener, aidoc_node, chicago, lakeshore_ai_rules):
    study = routed(chicago)
    [ack] = exchange(hl7_listener, ai_oru(accession=study.accession_number, present=False, probability=0.02))
    assert msa(ack)[0] == "AA"
    wait_for(lambda: AiFinding.objects.filter(result__study=study, present=False).exists())
    time.sleep(0.3)  # routing has had its chance to (wrongly) act
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("ROUTINE", 1)
    assert not StudyEvent.objects.filter(study=study, kind=StudyEventKind.AI_RERANKED).exists()


@ONE_LISTENER_MODE
def test_an_oru_from_a_sender_that_is_not_an_ai_node_is_refused(hl7_listener, chicago, lakeshore_ai_rules):
    study = routed(chicago)
    # EPIC_RAD^LAKESHORE is Lakeshore's order sender, not an AI node
    [ack] = exchange(hl7_listener, ai_oru(accession=study.accession_number, app="EPIC_RAD"))
    assert msa(ack)[0] == "AR" and err_code(ack) == "200"
    assert InboundMessage.objects.get().status == InboundStatus.REJECTED  # kept, with the reason
    assert not AiResult.objects.exists()


@ONE_LISTENER_MODE
def test_another_facilitys_ai_node_never_touches_the_study(
    hl7_listener, chicago, lakeview, lakeshore_ai_rules
):
    Hl7Sender.objects.create(
        facility=lakeview, sending_application="AIDOC", sending_facility="LAKEVIEW", ai_node=True
    )
    sender_cache_clear()
    study = routed(chicago)
    # Lakeview's node names Lakeshore's accession
    [ack] = exchange(hl7_listener, ai_oru(accession=study.accession_number, facility="LAKEVIEW"))
    assert msa(ack)[0] == "AA"  # well-formed: accepted, then not applicable here
    message = InboundMessage.objects.get()
    # kept waiting for a Lakeview study of that accession, which Lakeshore's is not
    assert message.status == InboundStatus.WAITING and "not stored at WI-LAKEVIEW" in message.error
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("ROUTINE", 1)
    assert not AiResult.objects.exists()


# --- an ORU before its study ---------------------------------------------------------------------

BECAUSE = "AI: Aidoc BriefCase ICH 2.1 Cerebral hemorrhage positive (p=0.93) → STAT, first within STAT"


@pytest.fixture
def lakeview_node(lakeview):
    Hl7Sender.objects.create(
        facility=lakeview, sending_application="AIDOC", sending_facility="LAKEVIEW", ai_node=True
    )
    sender_cache_clear()


def waiting_message(control_id: str) -> InboundMessage:
    message = InboundMessage.objects.get(control_id=control_id, sending_facility="LAKESHORE")
    assert message.status == InboundStatus.WAITING, (message.status, message.error)
    return message


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")
def test_an_oru_before_its_ct_waits_and_is_applied_when_the_ct_is_stored_by_storescu(
    hl7_listener,
    dicom_scp,
    tmp_path,
    aidoc_node,
    lakeview_node,
    chicago,
    lakeshore_ai_rules,
    client,
    ops_omar,
):
    ct = ct_series(count=3, accession="ACC-ORU-EARLY")
    # given Lakeshore's AI node sends its ICH-positive result before the modality's CT has come
    [ack] = exchange(hl7_listener, ai_oru(accession="ACC-ORU-EARLY", control_id="AI-EARLY1"))
    # then the node hears AA (it is well-formed) and the message waits, nothing applied yet
    assert msa(ack)[0] == "AA"
    message = wait_for(lambda: InboundMessage.objects.filter(status=InboundStatus.WAITING).first())
    assert (message.facility, message.waiting_accession) == (chicago, "ACC-ORU-EARLY")
    assert not AiResult.objects.exists()
    # and the message browser shows it waiting, not failed
    client.force_login(ops_omar)
    page = client.get("/operations/interfaces/messages/").content.decode()
    assert "Waiting for its study" in page and "Failed while applying" not in page
    # and Lakeview's node names the same accession: it waits for Lakeview's study only
    [ack] = exchange(
        hl7_listener, ai_oru(accession="ACC-ORU-EARLY", control_id="AI-LV1", facility="LAKEVIEW")
    )
    assert msa(ack)[0] == "AA"
    theirs = wait_for(
        lambda: InboundMessage.objects.filter(sending_facility="LAKEVIEW", status="waiting").first()
    )
    # when the CT arrives by C-STORE at Lakeshore
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, ct.datasets)).returncode == 0
    # then the waiting ORU is applied to it: the result, the badge, the raise with its because
    study = Study.objects.get(study_instance_uid=ct.study_uid)
    result = wait_for(lambda: AiResult.objects.filter(study=study).first())
    assert (result.source, result.facility, result.sop_instance_uid) == ("hl7", chicago, "AIDOC^AI-EARLY1")
    event = wait_for(lambda: StudyEvent.objects.filter(study=study, kind=StudyEventKind.AI_RERANKED).first())
    assert event.detail["because"] == BECAUSE
    message.refresh_from_db()
    assert message.status == InboundStatus.PROCESSED and f"AI result {result.pk}" in message.error
    # and once complete it is routed STAT, first within STAT, with its badge
    studies_complete_quiet(now=timezone.now() + timedelta(hours=1))
    study.refresh_from_db()
    assert (study.priority, study.triage_rank, study.worklist_routed) == ("STAT", 0, True)
    assert study.ai_badge == "Cerebral hemorrhage p=0.93 · Aidoc BriefCase ICH 2.1"
    # and Lakeview's ORU still waits: it never touched Lakeshore's study
    theirs.refresh_from_db()
    assert theirs.status == InboundStatus.WAITING
    assert AiResult.objects.count() == 1


@ONE_LISTENER_MODE
def test_an_oru_naming_its_study_uid_is_applied_when_the_study_comes_by_stow(
    hl7_listener, image_store, aidoc_node, chicago, lakeshore_ai_rules, client, admin_chicago
):
    ct = ct_series(count=3, accession="ACC-ORU-STOW")
    # given the ORU names the study by its Study Instance UID (OBX 110180) and an accession the
    # images will not carry
    oru = ai_oru(accession="RIS-OTHER-1", control_id="AI-STOW1", study_uid=ct.study_uid)
    [ack] = exchange(hl7_listener, oru)
    assert msa(ack)[0] == "AA"
    message = wait_for(lambda: InboundMessage.objects.filter(status=InboundStatus.WAITING).first())
    assert message.waiting_study_uid == ct.study_uid
    # when the hospital's PACS account posts the CT by STOW-RS
    client.force_login(admin_chicago)
    response = stow(client, multipart(*(part10(ds) for ds in ct.datasets)))
    assert response.status_code == 200, response.content
    # then the ORU is applied to that study with the because
    study = Study.objects.get(study_instance_uid=ct.study_uid)
    wait_for(lambda: AiResult.objects.filter(study=study, source="hl7").exists())
    event = wait_for(lambda: StudyEvent.objects.filter(study=study, kind=StudyEventKind.AI_RERANKED).first())
    assert event.detail["because"] == BECAUSE
    message.refresh_from_db()
    assert message.status == InboundStatus.PROCESSED


@ONE_LISTENER_MODE
def test_a_waiting_oru_whose_study_never_comes_is_dead_lettered_for_operations(
    hl7_listener, aidoc_node, chicago, lakeshore_ai_rules, client, ops_omar, settings
):
    settings.READROOM_AI_ORU_WAIT_HOURS = 24
    [ack] = exchange(hl7_listener, ai_oru(accession="ACC-NEVER", control_id="AI-NEVER1"))
    assert msa(ack)[0] == "AA"
    message = wait_for(lambda: InboundMessage.objects.filter(status=InboundStatus.WAITING).first())
    # not before its time
    assert ai_orus_waiting_expire(now=timezone.now() + timedelta(hours=23)) == 0
    # after a day without its study it is a dead letter, with why, and the facility's alert is open
    assert ai_orus_waiting_expire(now=timezone.now() + timedelta(hours=25)) == 1
    message.refresh_from_db()
    assert message.status == InboundStatus.DEAD and message.dead_at
    assert message.error.startswith("its study never arrived: waited 24 h (AI result for a study not stored")
    assert InterfaceAlert.objects.filter(
        facility=chicago, interface=InterfaceKind.HL7_IN_DEAD, cleared_at__isnull=True
    ).exists()
    # and operations see it among the inbound dead letters, to reprocess or discard
    client.force_login(ops_omar)
    page = client.get("/operations/interfaces/").content.decode()
    assert "AI-NEVER1" in page and "its study never arrived" in page
    # a second run changes nothing
    assert ai_orus_waiting_expire(now=timezone.now() + timedelta(hours=26)) == 0


@ONE_LISTENER_MODE
def test_the_expiry_runs_on_beat_as_a_registered_task(
    hl7_listener, aidoc_node, chicago, lakeshore_ai_rules, settings
):
    from radiology.celery import app
    from radiology.schedule import PERIODIC_TASKS

    entry = PERIODIC_TASKS["ai-oru-waiting-expire"]
    assert entry.task == "interfaces.tasks.ai_orus_waiting_expire" and entry.every == timedelta(minutes=5)
    # the name resolves to the task, and the task expires what waited too long
    settings.READROOM_AI_ORU_WAIT_HOURS = 0
    [ack] = exchange(hl7_listener, ai_oru(accession="ACC-BEAT", control_id="AI-BEAT1"))
    assert msa(ack)[0] == "AA"
    wait_for(lambda: InboundMessage.objects.filter(status=InboundStatus.WAITING).exists())
    # an eager result; an in-process worker started earlier on this xdist worker leaves Celery's
    # "joins block" flag set, and get() then refuses ("Never call result.get() within a task")
    assert app.tasks[entry.task].apply().get(disable_sync_subtasks=False) == 1
    assert InboundMessage.objects.get(control_id="AI-BEAT1").status == InboundStatus.DEAD
