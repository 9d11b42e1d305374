"""Worklist fan-out by push (issue 16, docs/worklist-fanout.md): a study event carries each reader's
own row (or its removal) and whether the study was on their list before; rows are rendered once per
shape, not per reader; a reader who may not read the study hears nothing."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone

from credentialing import eligibility
from tests.conftest import enrol_totp, make_radiologist
from tests.worklist.conftest import make_eligible, make_study
from worklist import broadcast, rows
from worklist.groups import OPERATIONS_GROUP, user_group
from worklist.services import study_claim, study_release, study_route

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """Every (group, event) the broadcasts send, captured where they leave for the channel layer."""
    captured: list[tuple[str, dict]] = []

    async def capture(messages):
        captured.extend(messages)

    monkeypatch.setattr(broadcast, "_messages_send", capture)
    return captured


@pytest.fixture
def renders(monkeypatch):
    """Rows rendered: a reader's row (built in Python, worklist.rows.reader_row_html) or the
    operations row (its template)."""
    counted = {"n": 0}

    def counting(real):
        def count(*args, **kwargs):
            counted["n"] += 1
            return real(*args, **kwargs)

        return count

    monkeypatch.setattr(rows, "render_to_string", counting(rows.render_to_string))
    monkeypatch.setattr(rows, "reader_row_html", counting(rows.reader_row_html))
    return counted


@pytest.fixture
def neuro_readers(chicago):
    """Four neuro readers eligible at Lakeshore now."""
    readers = [make_radiologist(f"neuro{i}", "neuro") for i in range(4)]
    for reader in readers:
        make_eligible(reader, chicago)
    return readers


def _by_group(sent) -> dict[str, dict]:
    return dict(sent)


def _route(chicago, django_capture_on_commit_callbacks, **extra) -> int:
    study = make_study(
        chicago, code="70450", text="CT HEAD W/O CONTRAST", completed_at=timezone.now(), **extra
    )
    with django_capture_on_commit_callbacks(execute=True):
        study_route(study_id=study.pk)
    return study.pk


def test_a_routed_study_pushes_its_row_to_each_eligible_reader_rendered_once_per_shape(
    chicago, lakeview, neuro_readers, dr_msk_wi, sent, renders, django_capture_on_commit_callbacks
):
    # given four eligible neuro readers at Lakeshore and a WI-only MSK reader at Lakeview
    make_eligible(dr_msk_wi, lakeview)
    # when a CT head is routed at Lakeshore
    study_id = _route(chicago, django_capture_on_commit_callbacks)
    events = _by_group(sent)
    # then every eligible reader gets the row for their list, new to it (nothing to uncount)
    for reader in neuro_readers:
        event = events[user_group(reader.pk)]
        assert event["type"] == "study.added" and event["study"]["id"] == study_id
        assert event["row"]["op"] == "upsert"
        assert (
            f'data-study-id="{study_id}"' in event["row"]["html"]
            and 'data-action="claim"' in event["row"]["html"]
        )
        assert event["row"]["facts"] == {
            "facility": "CHI-L1",
            "modalities": "CT",
            "subspecialty": "neuro",
            "priority": event["study"]["priority"],
        }
        assert event["was"] == {"listed": False}
    # and the same row for all four: rendered once for the readers and once for operations
    assert len({events[user_group(r.pk)]["row"]["html"] for r in neuro_readers}) == 1
    assert renders["n"] == 2
    assert events[OPERATIONS_GROUP]["row"]["op"] == "upsert"
    assert "4 eligible now" in events[OPERATIONS_GROUP]["row"]["html"]
    # and the reader licensed elsewhere hears nothing
    assert user_group(dr_msk_wi.pk) not in events


def test_a_claim_gives_the_holder_their_row_and_takes_it_off_the_others(
    chicago, neuro_readers, sent, renders, django_capture_on_commit_callbacks
):
    study_id = _route(chicago, django_capture_on_commit_callbacks)
    holder, *others = neuro_readers
    sent.clear()
    renders["n"] = 0
    # when one reader claims it
    with django_capture_on_commit_callbacks(execute=True):
        study_claim(study_id=study_id, user=holder, at=timezone.now())
    events = _by_group(sent)
    # then the holder's row says it is theirs (Release), counted before and after
    mine = events[user_group(holder.pk)]
    assert (
        mine["row"]["op"] == "upsert"
        and "Yours" in mine["row"]["html"]
        and 'data-action="release"' in mine["row"]["html"]
    )
    assert mine["row"]["sort"].startswith("0")  # held first
    assert mine["was"]["listed"] is True
    # and every other reader drops it (it was on their list: one fewer in its priority class)
    for reader in others:
        event = events[user_group(reader.pk)]
        assert event["type"] == "study.claimed" and event["row"] == {"op": "remove"}
        assert (
            event["was"]["listed"] is True
            and event["was"]["facts"]["priority"] == mine["row"]["facts"]["priority"]
        )
    # and operations see who holds it; two renderings in all (holder's, operations')
    assert str(holder) in events[OPERATIONS_GROUP]["row"]["html"]
    assert renders["n"] == 2


def test_a_release_puts_the_row_back_on_every_eligible_list(
    chicago, neuro_readers, sent, django_capture_on_commit_callbacks
):
    study_id = _route(chicago, django_capture_on_commit_callbacks)
    holder, *others = neuro_readers
    with django_capture_on_commit_callbacks(execute=True):
        study_claim(study_id=study_id, user=holder, at=timezone.now())
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        study_release(study_id=study_id, user=holder)
    events = _by_group(sent)
    back = events[user_group(holder.pk)]
    assert back["row"]["op"] == "upsert" and 'data-action="claim"' in back["row"]["html"]
    assert back["was"]["listed"] is True  # it was theirs: the count stays
    for reader in others:
        assert events[user_group(reader.pk)]["row"]["op"] == "upsert"
        assert events[user_group(reader.pk)]["was"] == {"listed": False}  # back on their list: one more


def test_a_release_by_a_reader_whose_shift_ended_takes_it_off_their_page(
    chicago, neuro_readers, sent, django_capture_on_commit_callbacks
):
    from worklist.models import Shift

    study_id = _route(chicago, django_capture_on_commit_callbacks)
    holder = neuro_readers[0]
    with django_capture_on_commit_callbacks(execute=True):
        study_claim(study_id=study_id, user=holder, at=timezone.now())
    Shift.objects.filter(radiologist=holder).update(ends_at=timezone.now())
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        study_release(study_id=study_id, user=holder)
    event = _by_group(sent)[user_group(holder.pk)]
    assert event["row"] == {"op": "remove"} and event["was"]["listed"] is True


def test_a_reroute_to_another_subspecialty_takes_the_row_off_readers_it_leaves(
    chicago, neuro_readers, sent, django_capture_on_commit_callbacks
):
    from imaging.models import Study
    from worklist.models import CatalogueRule

    # given a study routed as neuro (a CT head)
    study_id = _route(chicago, django_capture_on_commit_callbacks)
    chest = make_radiologist("chest1", "chest")
    make_eligible(chest, chicago)
    # when its order changes to a chest CT and it is routed again
    study = Study.objects.get(pk=study_id)
    study.order.procedure_code, study.order.procedure_text = "71250", "CT CHEST W/O CONTRAST"
    study.order.save()
    assert CatalogueRule.objects.filter(procedure_code="71250").exists()
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        study_route(study_id=study_id)
    events = _by_group(sent)
    # then the neuro readers drop it (it was on their list) and the chest reader gains it
    for reader in neuro_readers:
        assert events[user_group(reader.pk)]["row"] == {"op": "remove"}
        assert events[user_group(reader.pk)]["was"]["facts"]["subspecialty"] == "neuro"
    gained = events[user_group(chest.pk)]
    assert (
        gained["type"] == "study.updated"
        and gained["row"]["op"] == "upsert"
        and gained["was"] == {"listed": False}
    )


def test_a_pushed_row_is_the_row_the_page_renders(
    chicago, neuro_readers, client, sent, django_capture_on_commit_callbacks
):
    # given a routed study and a reader's verified session
    from django_otp import DEVICE_ID_SESSION_KEY

    _route(chicago, django_capture_on_commit_callbacks)
    reader = neuro_readers[0]
    device = enrol_totp(reader)
    client.force_login(reader)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    # when the page is fetched
    html = client.get("/worklist/rows/").content.decode()
    # then it holds exactly the row the socket pushed (one template, one decoration), but for the
    # countdown's seconds, which tick between the two renderings
    start = html.index('<tr class="wl-row')
    page_row = html[start : html.index("</tr>", start) + len("</tr>")]
    pushed = _by_group(sent)[user_group(reader.pk)]["row"]["html"]

    def same(text: str) -> str:
        return re.sub(r">[\d:]+<", "><", " ".join(text.split()))

    assert same(page_row) == same(pushed)


def test_a_code_stroke_alert_goes_to_its_audience_before_any_row_is_rendered(
    chicago, lakeview, neuro_readers, dr_msk_wi, renders, monkeypatch, django_capture_on_commit_callbacks
):
    # given four eligible neuro readers at Lakeshore and a WI-only reader at Lakeview
    make_eligible(dr_msk_wi, lakeview)
    handed: list[tuple[int, list[tuple[str, dict]]]] = []  # (renderings so far, messages) per send

    async def capture(messages):
        handed.append((renders["n"], list(messages)))

    monkeypatch.setattr(broadcast, "_messages_send", capture)
    audiences = {"n": 0}
    real_eligible = eligibility.eligible_readers

    def counting(*args, **kwargs):
        audiences["n"] += 1
        return real_eligible(*args, **kwargs)

    monkeypatch.setattr(eligibility, "eligible_readers", counting)
    # when a code-stroke CT head is routed there
    study_id = _route(chicago, django_capture_on_commit_callbacks, priority="STROKE", is_stroke=True)
    # then the first sends are the alert, made before any row was rendered, the same small message —
    # operations first (their group needs no eligibility), then every eligible reader, and nobody else
    (renders_ops, to_ops), (renders_readers, to_readers), *rest = handed
    assert renders_ops == renders_readers == 0
    assert [group for group, _ in to_ops] == [OPERATIONS_GROUP]
    assert {group for group, _ in to_readers} == {user_group(r.pk) for r in neuro_readers}
    first = to_ops + to_readers
    alert = first[0][1]
    assert all(event is alert for _, event in first)
    assert (alert["type"], alert["step"], alert["study"]["id"]) == ("alert", "stroke_alert", study_id)
    assert "row" not in alert and "html" not in str(alert)
    # and then the routing and its alert step, each with the rows — rendered once for both events
    kinds = [event["type"] for _, messages in rest for _, event in messages]
    assert set(kinds) == {"study.added", "study.escalated"}
    assert renders["n"] == 2
    # and the audience was computed once: in the transaction, for the alert's record, which names it
    assert audiences["n"] == 1
    # and the reader licensed elsewhere heard nothing at all
    assert user_group(dr_msk_wi.pk) not in {group for _, messages in handed for group, _ in messages}


def _handed_and_audiences(monkeypatch) -> tuple[list, list]:
    """Every send as it leaves for the channel layer, and a mark for each eligibility computation,
    in one sequence: ``("send", messages)`` / ``("eligibility", None)``."""
    sequence: list[tuple[str, list | None]] = []

    async def capture(messages):
        sequence.append(("send", list(messages)))

    real_eligible = eligibility.eligible_readers

    def counting(*args, **kwargs):
        sequence.append(("eligibility", None))
        return real_eligible(*args, **kwargs)

    monkeypatch.setattr(broadcast, "_messages_send", capture)
    monkeypatch.setattr(eligibility, "eligible_readers", counting)
    return sequence


def test_the_two_minute_step_computes_eligibility_once_and_tells_operations_first(
    chicago, lakeview, neuro_readers, dr_msk_wi, monkeypatch, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from worklist.escalation import stroke_step_fire

    # given an unclaimed code stroke routed at Lakeshore, a WI-only reader on shift at Lakeview
    make_eligible(dr_msk_wi, lakeview)
    study_id = _route(chicago, django_capture_on_commit_callbacks, priority="STROKE", is_stroke=True)
    sequence = _handed_and_audiences(monkeypatch)
    # when its 2-minute step fires
    with django_capture_on_commit_callbacks(execute=True):
        step = stroke_step_fire(
            study_id=study_id, step="stroke_readers", at=timezone.now() + timedelta(minutes=2)
        )
    # then eligibility was computed once, inside the step (for its record), never again after commit
    assert [kind for kind, _ in sequence].count("eligibility") == 1
    assert sequence[0][0] == "eligibility"
    sends = [messages for kind, messages in sequence if kind == "send"]
    # and operations got the alert first, then exactly the readers the record names, then the rows
    assert [(group, event["type"], event["step"]) for group, event in sends[0]] == [
        (OPERATIONS_GROUP, "alert", "stroke_readers")
    ]
    named = {reader["id"] for reader in step.notified["readers"]}
    assert named == {reader.pk for reader in neuro_readers}
    assert {group for group, _ in sends[1]} == {user_group(pk) for pk in named}
    assert all(event["type"] == "alert" for _, event in sends[1])
    assert {event["type"] for messages in sends[2:] for _, event in messages} == {"study.escalated"}
    # and the reader licensed elsewhere heard nothing at all
    assert user_group(dr_msk_wi.pk) not in {group for messages in sends for group, _ in messages}


def test_the_five_minute_step_computes_eligibility_once_in_its_transaction_and_tells_the_director_first(
    chicago, lakeview, neuro_readers, dr_msk_wi, monkeypatch, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from worklist.escalation import stroke_step_fire
    from worklist.groups import DIRECTOR_GROUP

    # given an unclaimed code stroke routed at Lakeshore, a WI-only reader on shift at Lakeview
    make_eligible(dr_msk_wi, lakeview)
    study_id = _route(chicago, django_capture_on_commit_callbacks, priority="STROKE", is_stroke=True)
    sequence = _handed_and_audiences(monkeypatch)
    # when its 5-minute step fires
    with django_capture_on_commit_callbacks(execute=True):
        step = stroke_step_fire(
            study_id=study_id, step="stroke_director", at=timezone.now() + timedelta(minutes=5)
        )
    # then eligibility was computed once, inside the step (for its record), never again after commit
    assert [kind for kind, _ in sequence].count("eligibility") == 1
    assert sequence[0][0] == "eligibility"
    sends = [messages for kind, messages in sequence if kind == "send"]
    # and the first send after commit is the alert to operations and the director
    assert [(group, event["type"], event["step"]) for group, event in sends[0]] == [
        (OPERATIONS_GROUP, "alert", "stroke_director"),
        (DIRECTOR_GROUP, "alert", "stroke_director"),
    ]
    # and the readers told are exactly those the record names: the eligible ones, nobody else
    named = {reader["id"] for reader in step.notified["readers"]}
    assert named == {reader.pk for reader in neuro_readers}
    assert {group for group, _ in sends[1]} == {user_group(pk) for pk in named}
    assert {event["type"] for messages in sends[2:] for _, event in messages} == {"study.escalated"}
    assert user_group(dr_msk_wi.pk) not in {group for messages in sends for group, _ in messages}
    # and the record still names the groups rung
    assert step.notified["groups"] == [DIRECTOR_GROUP, OPERATIONS_GROUP]


def test_no_alert_for_a_routine_study_or_a_claimed_stroke(
    chicago, neuro_readers, sent, django_capture_on_commit_callbacks
):
    # given a routine CT head routed, and a stroke routed then claimed
    _route(chicago, django_capture_on_commit_callbacks)
    stroke_id = _route(chicago, django_capture_on_commit_callbacks, priority="STROKE", is_stroke=True)
    assert sum(event["type"] == "alert" for _, event in sent) == len(neuro_readers) + 1  # the stroke's
    sent.clear()
    # when a reader claims the stroke
    with django_capture_on_commit_callbacks(execute=True):
        study_claim(study_id=stroke_id, user=neuro_readers[0], at=timezone.now())
    # then nobody is alerted again: only the claim is told
    assert sent and all(event["type"] == "study.claimed" for _, event in sent)
