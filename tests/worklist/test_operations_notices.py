"""Operations' notices on the live channel (issue 14, worklist.notices.operations_notice_send): a
claim that timed out and a coverage gap starting within the hour reach every operations user's own
group, wait for each one's acknowledgement (recorded: who, when), are told once, and nobody else —
a reader — hears of them or may acknowledge them. (A silent interface: tests/interfaces/test_health.py.)"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import make_user
from tests.worklist.conftest import Screens
from tests.worklist.test_assignment import two_claims  # noqa: F401
from worklist.assignment import claims_timeout_sweep
from worklist.coverage import coverage_gaps_notify
from worklist.groups import user_group
from worklist.models import AlertAcknowledgement, NoticeKind, Shift, UserNotice

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops_olga(db):
    from accounts.roles import Role

    return make_user("ops_olga", Role.OPERATIONS, is_staff=True)


def test_a_timed_out_claim_is_told_to_each_operations_user_and_each_acknowledges_their_own(
    client,
    verified_client,
    chicago,
    neuro_reader,
    ops_omar,
    ops_olga,
    two_claims,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    t0, idle, _ = two_claims
    screens = Screens([user_group(ops_omar.pk), user_group(ops_olga.pk), user_group(neuro_reader.pk)])
    # when the sweep releases the idle claims (facility timeout 30 minutes)
    with django_capture_on_commit_callbacks(execute=True):
        released = claims_timeout_sweep(at=t0 + timedelta(minutes=31))
    assert idle.pk in released
    # then each operations user's pages get a notice naming the study and the idle reader
    received = screens.received()
    for user in (ops_omar, ops_olga):
        told = [e["notice"] for e in received[user_group(user.pk)] if e["type"] == "notice"]
        assert {n["kind"] for n in told} == {NoticeKind.CLAIM_TIMED_OUT}
        mine = next(n for n in told if n["study"] == idle.pk)
        assert mine["title"] == "Claim timed out" and mine["facility"] == "Lakeshore Medical Center"
        assert idle.accession_number in mine["text"] and str(neuro_reader) in mine["text"]
    # and the reader is told of the release on the worklist, not by an operations notice
    assert not [e for e in received[user_group(neuro_reader.pk)] if e["type"] == "notice"]
    # when Omar acknowledges his: recorded for him, gone from his resync, still in Olga's
    client.force_login(ops_omar)
    [pending, *_] = [n for n in client.get("/live/pending/").json()["notices"] if n["study"] == idle.pk]
    body = json.dumps({"notice": pending["key"]})
    assert client.post("/live/acknowledge/", body, content_type="application/json").status_code == 200
    ack = AlertAcknowledgement.objects.get(kind=pending["key"])
    assert (ack.user, ack.study_id) == (ops_omar, idle.pk)
    assert pending["key"] not in {n["key"] for n in client.get("/live/pending/").json()["notices"]}
    client.force_login(ops_olga)
    assert any(n["study"] == idle.pk for n in client.get("/live/pending/").json()["notices"])
    # and nobody else may acknowledge Omar's notice (Olga, a reader)
    assert client.post("/live/acknowledge/", body, content_type="application/json").status_code == 404
    verified_client(neuro_reader)
    assert client.post("/live/acknowledge/", body, content_type="application/json").status_code == 404


def test_a_coverage_gap_starting_within_the_hour_is_told_once_to_operations(
    chicago, neuro_reader, ops_omar, django_capture_on_commit_callbacks
):
    # given the only neuro reader at Lakeshore, on shift until 40 minutes from now
    now = timezone.now()
    Shift.objects.filter(radiologist=neuro_reader).update(ends_at=now + timedelta(minutes=40))
    screens = Screens([user_group(ops_omar.pk), user_group(neuro_reader.pk)])
    # when the sweep runs (twice, as a later sweep or another worker would)
    with django_capture_on_commit_callbacks(execute=True):
        told = coverage_gaps_notify(at=now)
    assert coverage_gaps_notify(at=now + timedelta(minutes=5)) == 0
    # then operations are told of the neuro gap starting when his shift ends, once
    notices = UserNotice.objects.filter(user=ops_omar, kind=NoticeKind.COVERAGE_GAP)
    assert told == notices.count() >= 1
    start = (now + timedelta(minutes=40)).astimezone(chicago.zone)
    [neuro] = [n for n in notices if n.text.startswith("Lakeshore Medical Center: Neuro")]
    assert f"nobody eligible {start:%H:%M}–" in neuro.text and neuro.url == "/operations/coverage/"
    [event] = [e for e in screens.received()[user_group(ops_omar.pk)] if e["notice"]["text"] == neuro.text]
    assert event["notice"]["title"] == "Coverage gap within the hour"
    # and gaps already under way (subspecialties nobody covers now) are not told as starting
    assert all(n.about.startswith("coverage_gap:") for n in notices)
    assert not UserNotice.objects.filter(user=neuro_reader).exists()


def test_a_gap_more_than_an_hour_away_is_not_told_yet(chicago, neuro_reader, ops_omar):
    now = timezone.now()
    Shift.objects.filter(radiologist=neuro_reader).update(ends_at=now + timedelta(minutes=90))
    coverage_gaps_notify(at=now)
    assert not UserNotice.objects.filter(kind=NoticeKind.COVERAGE_GAP, text__contains="Neuro").exists()


def test_the_gap_sweep_is_a_registered_periodic_task():
    from celery import current_app

    from radiology.schedule import PERIODIC_TASKS

    entry = PERIODIC_TASKS["coverage-gaps-notify"]
    assert entry.task in current_app.tasks and entry.every <= timedelta(minutes=10)
