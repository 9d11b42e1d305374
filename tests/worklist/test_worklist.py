"""GET /api/v1/worklist/: the studies a reader may take, mine first, by priority then deadline; the SLA
clock each row carries; nothing from another facility; the same query count for 3 rows or 30."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from facilities.models import PriorityClass
from imaging.models import Study, StudyStatus
from tests.conftest import make_radiologist
from tests.worklist.conftest import make_eligible, make_study
from worklist.models import StudyAssignment
from worklist.services import study_claim, study_route

pytestmark = pytest.mark.django_db


def routed(facility, **kwargs):
    study = make_study(facility, **kwargs)
    study_route(study_id=study.pk)
    return study


def rows(client, **params) -> list[dict]:
    response = client.get("/api/v1/worklist/", params)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_sla_deadline_is_clock_start_plus_the_contract_target(chicago):
    # given a routine head CT whose images were complete at 02:00, and a stroke ordered at 03:00
    complete = timezone.now() - timedelta(hours=1)
    routine = routed(chicago, code="70450", priority=PriorityClass.ROUTINE, completed_at=complete)
    stroke = make_study(chicago, code="70450", priority=PriorityClass.STROKE, first_received_at=complete)
    stroke.order.ordered_at = complete - timedelta(minutes=7)
    stroke.order.save()
    study_route(study_id=stroke.pk)
    # then the routine clock runs 24 h from completion, the stroke's 20 min from the order
    assert StudyAssignment.objects.get(study=routine).sla_deadline == complete + timedelta(hours=24)
    stroke_clock = StudyAssignment.objects.get(study=stroke)
    assert stroke_clock.clock_started_at == complete - timedelta(minutes=7)
    assert stroke_clock.sla_deadline == complete + timedelta(minutes=13)


def test_reader_sees_mine_first_then_priority_then_deadline(verified_client, neuro_reader, chicago, lakeview):
    now = timezone.now()
    routine_late = routed(chicago, code="70450", priority=PriorityClass.ROUTINE, completed_at=now)
    routine_early = routed(
        chicago, code="70450", priority=PriorityClass.ROUTINE, completed_at=now - timedelta(hours=3)
    )
    stat = routed(chicago, code="70450", priority=PriorityClass.STAT, completed_at=now)
    mine = routed(chicago, code="70450", priority=PriorityClass.ROUTINE, completed_at=now)
    study_claim(study_id=mine.pk, user=neuro_reader, at=now)
    elsewhere = routed(lakeview, code="70450", priority=PriorityClass.STAT, completed_at=now)
    client = verified_client(neuro_reader)
    listed = rows(client)
    assert [r["id"] for r in listed] == [mine.pk, stat.pk, routine_early.pk, routine_late.pk]
    assert elsewhere.pk not in [r["id"] for r in listed]  # not licensed/privileged in WI
    assert listed[0]["claimed_by"]["id"] == neuro_reader.pk
    assert "patient_name" not in listed[0] and "mrn" not in str(listed[0]).lower()


def test_a_study_someone_else_holds_is_not_offered(verified_client, neuro_reader, chicago):
    study = routed(chicago, code="70450", completed_at=timezone.now())
    other = make_radiologist("dr_neuro_two", "neuro")
    make_eligible(other, chicago)
    study_claim(study_id=study.pk, user=other, at=timezone.now())
    assert rows(verified_client(neuro_reader)) == []


def test_operations_see_every_open_study_and_filters(client, ops_omar, chicago, lakeview):
    now = timezone.now()
    head = routed(chicago, code="70450", priority=PriorityClass.STAT, completed_at=now)
    routed(lakeview, code="73721", priority=PriorityClass.ROUTINE, completed_at=now, modalities="MR")
    client.force_login(ops_omar)
    assert len(rows(client)) == 2
    assert [r["id"] for r in rows(client, facility="CHI-L1")] == [head.pk]
    assert [r["subspecialty"] for r in rows(client, subspecialty="msk")] == ["msk"]
    assert [r["priority"] for r in rows(client, priority="stat")] == ["STAT"]
    assert [r["id"] for r in rows(client, accession=head.accession_number)] == [head.pk]


def test_query_count_does_not_grow_with_rows(client, ops_omar, chicago, django_assert_max_num_queries):
    client.force_login(ops_omar)
    for _ in range(3):
        routed(chicago, code="70450", completed_at=timezone.now())
    with django_assert_max_num_queries(12) as small:
        rows(client)
    for _ in range(27):
        routed(chicago, code="70450", completed_at=timezone.now())
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert len(rows(client)) == 30


def test_credentialing_staff_get_nothing(client, mso_mary, chicago):
    routed(chicago, code="70450", completed_at=timezone.now())
    client.force_login(mso_mary)
    assert rows(client) == []


def test_reader_query_count_does_not_grow_with_rows(
    verified_client, neuro_reader, chicago, django_assert_num_queries, django_assert_max_num_queries
):
    # given a reader holding one study, with three more offered
    now = timezone.now()
    study_claim(study_id=routed(chicago, code="70450", completed_at=now).pk, user=neuro_reader, at=now)
    for _ in range(3):
        routed(chicago, code="70450", completed_at=now)
    client = verified_client(neuro_reader)
    rows(client)  # the session's first request settles its own bookkeeping
    # session, user, OTP device, groups; the reader's facts (one query); held ids, the others' page
    # with their counts by rank (one statement), the rows (worklist.selectors.reader_list)
    with django_assert_max_num_queries(8) as small:
        assert len(rows(client)) == 4
    # when 26 more are offered and a second one is held
    for _ in range(26):
        routed(chicago, code="70450", completed_at=now)
    study_claim(study_id=routed(chicago, code="70450", completed_at=now).pk, user=neuro_reader, at=now)
    # then the page costs the same queries (rows come with facility, order, patient and holder)
    with django_assert_num_queries(len(small.captured_queries)):
        listed = rows(client)
    assert len(listed) == 31
    assert [r["claimed_by"] is not None for r in listed[:3]] == [True, True, False]


def test_pages_keep_the_reading_order(verified_client, neuro_reader, chicago):
    # given five studies of decreasing urgency
    now = timezone.now()
    studies = [
        routed(chicago, code="70450", priority=priority, completed_at=now)
        for priority in (PriorityClass.STROKE, PriorityClass.STAT, PriorityClass.ASAP, PriorityClass.ROUTINE)
    ]
    studies.append(routed(chicago, code="70450", priority=PriorityClass.ROUTINE, completed_at=now))
    client = verified_client(neuro_reader)
    # when the reader asks for the second page of two
    response = client.get("/api/v1/worklist/", {"limit": 2, "offset": 2})
    # then it holds the third and fourth, and the count is of all five
    body = response.json()
    assert body["count"] == 5
    assert [r["id"] for r in body["results"]] == [studies[2].pk, studies[3].pk]
    assert "offset=4" in body["next"] and "offset" not in body["previous"]
    # and past the last page the count is still of all five
    body = client.get("/api/v1/worklist/", {"limit": 2, "offset": 10}).json()
    assert (body["count"], body["results"]) == (5, [])


def test_a_closed_study_i_held_leaves_my_list(verified_client, neuro_reader, chicago):
    # given a study the reader holds, then cancelled by the hospital
    now = timezone.now()
    held = routed(chicago, code="70450", completed_at=now)
    study_claim(study_id=held.pk, user=neuro_reader, at=now)
    Study.objects.filter(pk=held.pk).update(status=StudyStatus.CANCELLED)
    # then it is no longer on the reader's worklist
    assert rows(verified_client(neuro_reader)) == []


def test_the_api_rows_are_what_the_documented_serializer_says(verified_client, neuro_reader, chicago):
    # given a held study with an order, a patient and milestones, and an unclassified one without
    from rest_framework.renderers import JSONRenderer

    from imaging.models import Patient
    from worklist.api import WorklistEntrySerializer
    from worklist.selectors import WORKLIST_RELATED

    held = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST", completed_at=timezone.now())
    Patient.objects.filter(pk=held.patient_id).update(sex="F", birth_date="1950-02-03")
    bare = make_study(chicago, description="CT SOMETHING", completed_at=timezone.now())
    for study in (held, bare):
        study_route(study_id=study.pk)
    study_claim(study_id=held.pk, user=neuro_reader, at=timezone.now())
    # when the API lists them
    listed = verified_client(neuro_reader).get("/api/v1/worklist/").json()["results"]
    # then each row is exactly the serializer's rendering of the study (the schema's promise)
    studies = Study.objects.select_related(*WORKLIST_RELATED).filter(pk__in=[r["id"] for r in listed])
    import json

    expected = json.loads(
        JSONRenderer().render(WorklistEntrySerializer(studies.order_by("id"), many=True).data)
    )
    assert sorted(listed, key=lambda r: r["id"]) == expected
    assert {r["id"] for r in listed} == {held.pk, bare.pk}


def test_each_page_read_with_its_counts_is_the_whole_lists_slice_and_counts(
    neuro_reader, chicago, django_assert_num_queries
):
    # given a reader holding three studies, with seven more of mixed priorities offered
    from worklist.selectors import reader_list, worklist_counts, worklist_for, worklist_parts

    now = timezone.now()
    priorities = [PriorityClass.ROUTINE, PriorityClass.STROKE, PriorityClass.STAT, PriorityClass.ASAP]
    studies = [routed(chicago, code="70450", priority=priorities[n % 4], completed_at=now) for n in range(10)]
    for study in studies[4:7]:
        study_claim(study_id=study.pk, user=neuro_reader, at=now)
    whole = worklist_for(neuro_reader, at=now)
    expected_ids, expected_counts = list(whole.values_list("pk", flat=True)), worklist_counts(whole)
    assert len(expected_ids) == 10 and expected_counts["STROKE"] == 3
    parts = worklist_parts(neuro_reader, at=now)
    # when any page is read, inside the held studies, across their end, among the others or past the end
    for size in (1, 2, 3, 4, 11):
        for start in range(0, 13):
            ids, counts = reader_list(parts, page=(start, start + size))
            # then its counts and length are the whole list's, and its ids that list's slice
            assert (counts, len(ids)) == (expected_counts, 10), (start, size)
            with django_assert_num_queries(0 if start < 10 else 1):  # the others read with the counts
                assert ids[start : start + size] == expected_ids[start : start + size], (start, size)


def test_a_reader_with_nothing_offered_counts_only_what_they_hold(neuro_reader, chicago):
    # given a reader who holds the only open study
    from worklist.selectors import reader_list, worklist_parts

    now = timezone.now()
    held = routed(chicago, code="70450", priority=PriorityClass.STAT, completed_at=now)
    study_claim(study_id=held.pk, user=neuro_reader, at=now)
    # then the page (and one past the end) shows it and counts it once
    for page in ((0, 50), (50, 100)):
        ids, counts = reader_list(worklist_parts(neuro_reader, at=now), page=page)
        assert (len(ids), counts["STAT"], sum(counts.values())) == (1, 1, 1)
    assert reader_list(worklist_parts(neuro_reader, at=now), page=(0, 50))[0][0:50] == [held.pk]
