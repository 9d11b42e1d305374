"""A prior question whose task was lost (docs/priors.md, "A question never asked"): the order writes it
(PENDING, one per source) in its own transaction and enqueues the task after commit; if that task never
comes — the broker was down at the commit, a message was dropped — the sweep asks it 10 minutes later,
once, and a question for a source removed since is closed as not asked."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from imaging.models import Order, Patient, PriorRetrieval, RetrievalStatus
from imaging.priors import PRIOR_UNASKED_MINUTES, priors_unasked_due
from interfaces.tasks import priors_deferred_sweep
from tests.net import free_port

pytestmark = pytest.mark.django_db


def _sources(facility, *names: str) -> None:
    facility.prior_sources = [
        {"name": name, "method": "c-move", "host": "127.0.0.1", "port": free_port(), "called_ae_title": "X",
         "timeout_seconds": 2}
        for name in names
    ]  # fmt: skip
    facility.save(update_fields=["prior_sources"])


def _order_with_its_task_lost(facility, django_capture_on_commit_callbacks) -> Order:
    with django_capture_on_commit_callbacks(execute=False) as lost:
        patient = Patient.objects.create(facility=facility, mrn="CHI-200", assigning_authority="LAKESHORE")
        order = Order.objects.create(
            facility=facility, patient=patient, accession_number="A-LOST-1", procedure_code="71250",
            procedure_text="CT CHEST WO CONTRAST",
        )  # fmt: skip
    assert lost, "the order enqueues its question after commit"
    return order


def test_a_question_whose_task_was_lost_is_asked_by_the_sweep_once(
    chicago, django_capture_on_commit_callbacks
):
    # given a facility with a PACS source (down), and an order whose task never reached a worker
    _sources(chicago, "PACS")
    order = _order_with_its_task_lost(chicago, django_capture_on_commit_callbacks)
    # then its question is on record, PENDING and never attempted
    question = PriorRetrieval.objects.get(patient=order.patient, order=order)
    assert (question.status, question.attempts, question.source_name) == (RetrievalStatus.PENDING, 0, "PACS")
    # and it is not asked again while it may still be on its way
    now = timezone.now()
    assert priors_unasked_due(now=now + timedelta(minutes=PRIOR_UNASKED_MINUTES - 1)) == []
    # when the sweep runs after the limit, it is asked (the source is down: it fails, and says so)
    with time_machine.travel(now + timedelta(minutes=PRIOR_UNASKED_MINUTES + 1), tick=False):
        assert priors_deferred_sweep() == 1
        # and a second sweep right after asks nothing more
        assert priors_deferred_sweep() == 0
    question.refresh_from_db()
    assert (question.status, question.attempts, question.last_error) == ("failed", 1, "source unreachable")


def test_a_question_for_a_source_removed_since_is_closed_not_asked(
    chicago, django_capture_on_commit_callbacks
):
    _sources(chicago, "PACS", "ARCHIVE")
    order = _order_with_its_task_lost(chicago, django_capture_on_commit_callbacks)
    assert set(PriorRetrieval.objects.filter(order=order).values_list("source_name", flat=True)) == {
        "PACS",
        "ARCHIVE",
    }
    # when the archive is taken out of the facility's configuration before the sweep
    chicago.prior_sources = chicago.prior_sources[:1]
    chicago.save(update_fields=["prior_sources"])
    due = priors_unasked_due(now=timezone.now() + timedelta(minutes=PRIOR_UNASKED_MINUTES + 1))
    # then only the PACS question is asked; the archive's is closed with the reason
    assert [q.source_name for q in due] == ["PACS"]
    archive = PriorRetrieval.objects.get(order=order, source_name="ARCHIVE")
    assert (archive.status, archive.last_error) == (RetrievalStatus.SKIPPED, "source no longer configured")


def test_a_facility_without_sources_writes_no_question(chicago):
    patient = Patient.objects.create(facility=chicago, mrn="CHI-300", assigning_authority="LAKESHORE")
    Order.objects.create(facility=chicago, patient=patient, accession_number="A-NONE-1")
    assert not PriorRetrieval.objects.exists()
