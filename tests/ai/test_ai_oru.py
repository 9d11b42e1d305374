"""An AI node's ORU^R01 over real MLLP (the existing listener): an ICH-positive OBX raises the study
like the SR does; an ORU from a sender not onboarded as an AI node is refused (AR); another
facility's study is never touched."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from facilities.models import Hl7Sender
from imaging.models import AiFinding, AiResult
from interfaces.hl7.inbound import sender_cache_clear
from interfaces.models import InboundMessage, InboundStatus
from tests.ai.test_ai_sr_scp import wait_for
from tests.ai_data import ai_oru
from tests.interfaces.test_hl7_listener import err_code, exchange, msa
from tests.worklist.conftest import make_study
from worklist.models import StudyEvent, StudyEventKind
from worklist.services import study_route

pytestmark = pytest.mark.django_db(transaction=True)


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


def test_a_negative_oru_changes_nothing(hl7_listener, aidoc_node, chicago, lakeshore_ai_rules):
    study = routed(chicago)
    [ack] = exchange(hl7_listener, ai_oru(accession=study.accession_number, present=False, probability=0.02))
    assert msa(ack)[0] == "AA"
    wait_for(lambda: AiFinding.objects.filter(result__study=study, present=False).exists())
    time.sleep(0.3)  # routing has had its chance to (wrongly) act
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("ROUTINE", 1)
    assert not StudyEvent.objects.filter(study=study, kind=StudyEventKind.AI_RERANKED).exists()


def test_an_oru_from_a_sender_that_is_not_an_ai_node_is_refused(hl7_listener, chicago, lakeshore_ai_rules):
    study = routed(chicago)
    # EPIC_RAD^LAKESHORE is Lakeshore's order sender, not an AI node
    [ack] = exchange(hl7_listener, ai_oru(accession=study.accession_number, app="EPIC_RAD"))
    assert msa(ack)[0] == "AR" and err_code(ack) == "200"
    assert InboundMessage.objects.get().status == InboundStatus.REJECTED  # kept, with the reason
    assert not AiResult.objects.exists()


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
    assert message.status == InboundStatus.FAILED and "not stored at WI-LAKEVIEW" in message.error
    study.refresh_from_db()
    assert (study.priority, study.triage_rank) == ("ROUTINE", 1)
