"""The worklist pages: the reader's list is exactly their worklist (never a second filter), the desk
sees every open study with the reasons nobody can read one, and the wrong roles are refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from facilities.models import PriorityClass
from tests.conftest import enrol_totp, make_radiologist
from tests.worklist.conftest import make_eligible, make_study
from worklist.models import Shift
from worklist.rows import sla_state
from worklist.services import study_claim, study_route

pytestmark = pytest.mark.django_db


def routed(facility, **kwargs):
    study = make_study(facility, **kwargs)
    study_route(study_id=study.pk)
    return study


def row_ids(response) -> list[int]:
    import re

    return [
        int(n)
        for n in re.findall(r'data-testid="study-row" data-study-id="(\d+)"', response.content.decode())
    ]


def test_reader_page_lists_mine_first_then_eligible_by_priority(
    verified_client, neuro_reader, chicago, lakeview
):
    # given a routine and a stroke head CT at Lakeshore, one routine I hold, and a study in WI
    now = timezone.now()
    routine = routed(chicago, code="70450", priority=PriorityClass.ROUTINE, completed_at=now)
    stroke = routed(
        chicago, code="70450", priority=PriorityClass.STROKE, is_stroke=True, first_received_at=now
    )
    mine = routed(chicago, code="70450", priority=PriorityClass.ROUTINE, completed_at=now)
    study_claim(study_id=mine.pk, user=neuro_reader, at=now)
    elsewhere = routed(lakeview, code="70450", priority=PriorityClass.STAT, completed_at=now)
    client = verified_client(neuro_reader)
    # when the reader opens the worklist
    response = client.get("/worklist/")
    # then: mine, then the stroke, then the routine — and never the WI study
    assert response.status_code == 200
    assert row_ids(response) == [mine.pk, stroke.pk, routine.pk]
    assert elsewhere.pk not in row_ids(response)
    html = response.content.decode()
    assert 'data-theme="dark"' in html
    assert 'data-priority="STROKE"><span class="prio prio-stroke">STROKE</span> <b>1</b>' in html
    assert 'data-priority="ROUTINE"><span class="prio prio-routine">ROUTINE</span> <b>2</b>' in html
    assert "MRN-" not in html  # no identifiers in the list
    # and the partial is the same list
    assert row_ids(client.get("/worklist/rows/")) == [mine.pk, stroke.pk, routine.pk]


def test_filters_narrow_the_rows(verified_client, neuro_reader, chicago):
    now = timezone.now()
    ct = routed(chicago, code="70450", completed_at=now)
    routed(chicago, code="70551", completed_at=now, modalities="MR")
    client = verified_client(neuro_reader)
    assert row_ids(client.get("/worklist/rows/", {"modality": "CT"})) == [ct.pk]
    page = client.get("/worklist/", {"modality": "CT"}).content.decode()
    assert '<label for="f-modality">Modality</label>' in page
    assert '<option value="CT" selected>' in page


def test_rows_partial_is_the_requesting_readers_worklist(
    verified_client, neuro_reader, dr_msk_wi, chicago, lakeview
):
    # given an IL neuro study and a WI-only MSK reader on shift
    enrol_totp(dr_msk_wi)
    make_eligible(dr_msk_wi, lakeview)
    routed(chicago, code="70450", completed_at=timezone.now())
    # then the WI reader's rows never include it, whatever the filter asks for
    client = verified_client(dr_msk_wi)
    assert row_ids(client.get("/worklist/rows/")) == []
    assert row_ids(client.get("/worklist/rows/", {"facility": chicago.code})) == []


def test_empty_worklist_says_why(verified_client, dr_neuro_il, chicago, neuro_il_credentials):
    # given an IL licence that expired yesterday and no shift on
    licence = neuro_il_credentials["licence"]
    licence.expires_on = timezone.localdate() - timedelta(days=2)
    licence.save()
    routed(chicago, code="70450", completed_at=timezone.now())
    # when the reader opens the worklist
    html = verified_client(dr_neuro_il).get("/worklist/").content.decode()
    # then the page says which rule keeps them out, in the eligibility engine's words
    assert 'data-testid="worklist-empty"' in html
    assert "No studies you are eligible for at Lakeshore Medical Center" in html
    assert f"licence 036-142857 expired on {licence.expires_on.isoformat()}" in html
    assert "not on shift" in html


def test_empty_state_does_not_reveal_a_facility_the_reader_has_no_privileges_at(
    verified_client, neuro_reader, lakeview
):
    # given a reader privileged only at Lakeshore, filtering on Lakeview's code
    html = verified_client(neuro_reader).get("/worklist/", {"facility": lakeview.code}).content.decode()
    # then the empty state names no other facility
    assert 'data-testid="worklist-empty"' in html
    assert "Lakeview" not in html


def test_empty_worklist_of_an_eligible_reader_says_nothing_is_waiting(verified_client, neuro_reader, chicago):
    html = verified_client(neuro_reader).get("/worklist/").content.decode()
    assert "You may read at Lakeshore Medical Center now; no unclaimed study there is waiting" in html


def test_radiologist_pages_need_the_verified_second_factor(client, neuro_reader):
    client.force_login(neuro_reader)
    for url in ("/worklist/", "/worklist/rows/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/account/verify/")


@pytest.mark.parametrize("who", ["mso_mary", "admin_chicago", "admin_lakeview"])
@pytest.mark.parametrize(
    "url", ["/worklist/", "/worklist/rows/", "/operations/worklist/", "/operations/worklist/rows/"]
)
def test_mso_and_facility_admins_are_refused(client, request, who, url, chicago):
    routed(chicago, code="70450", completed_at=timezone.now())
    client.force_login(request.getfixturevalue(who))
    response = client.get(url)
    assert response.status_code == 403
    assert b"data-study-id" not in response.content


def test_readers_are_refused_the_operations_desk(verified_client, neuro_reader):
    client = verified_client(neuro_reader)
    assert client.get("/operations/worklist/").status_code == 403
    assert client.get("/operations/worklist/rows/").status_code == 403


def test_operations_see_every_open_study_holders_breaches_and_why_nobody_is_eligible(
    client, ops_omar, neuro_reader, chicago, lakeview
):
    # given a study the neuro reader holds, a breached one, and a WI neuro study nobody may read
    now = timezone.now()
    held = routed(chicago, code="70450", completed_at=now)
    study_claim(study_id=held.pk, user=neuro_reader, at=now)
    late = routed(chicago, code="70450", priority=PriorityClass.STAT, completed_at=now - timedelta(hours=2))
    wi = routed(lakeview, code="70450", completed_at=now)
    off_shift = make_radiologist("dr_neuro_off", "neuro")
    make_eligible(off_shift, lakeview)
    Shift.objects.filter(radiologist=off_shift).update(
        starts_at=now - timedelta(hours=10), ends_at=now - timedelta(hours=2)
    )
    client.force_login(ops_omar)
    # when operations open their worklist
    response = client.get("/operations/worklist/")
    html = response.content.decode()
    # then every open study is there, the holder named, the breach counted and marked
    assert response.status_code == 200
    assert set(row_ids(response)) == {held.pk, late.pk, wi.pk}
    assert "Dr dr_neuro_il" in html
    assert "1 past deadline" in html and "BREACH" in html
    # and for the WI study: nobody eligible, one reader off shift, one without a WI licence
    assert "nobody eligible: 1 no WI licence, 1 off shift" in html
    assert "Dr dr_neuro_off: not on shift" in html
    # the unclaimed Lakeshore study has an eligible reader, named behind the count (issue 19)
    assert "1 eligible now" in html
    names = html.split('data-testid="eligible-names"', 1)[1].split("</details>", 1)[0]
    assert f"<li>{neuro_reader}</li>" in names


def test_operations_rows_cost_the_same_queries_for_3_rows_or_12(client, ops_omar, neuro_reader, chicago):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(ops_omar)

    def queries_for_rows(n: int) -> int:
        while len(row_ids(client.get("/operations/worklist/rows/"))) < n:
            routed(chicago, code="70450", completed_at=timezone.now())
        with CaptureQueriesContext(connection) as captured:
            assert len(row_ids(client.get("/operations/worklist/rows/"))) == n
        return len(captured)

    # the coverage of every unclaimed row is worked out in memory from facts loaded once
    assert queries_for_rows(3) == queries_for_rows(12)


# What a reader's rows partial (and its full page) may cost whatever the rows: the session, its user,
# OTP device and groups; the reader's facts (one query, which also gives the next shift boundary);
# the held ids, the others' ids on the page with their per-priority counts (one statement; the
# counts also give the paginator its count), its rows (plain values with their relations' columns)
# and the peer reviews: 9 (10 with an unclaimed stroke on the page: its acknowledgements). A query
# per row shows as more. The full page adds its filters' choices (the facilities the reader may
# see — their facts once more — and the subspecialties): 12.
READER_ROWS_QUERIES = {"/worklist/rows/": 9, "/worklist/": 12}


@pytest.mark.parametrize("url", ["/worklist/rows/", "/worklist/"])
def test_reader_rows_cost_the_same_few_queries_for_3_rows_or_12(
    verified_client, neuro_reader, chicago, url, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # given a reader holding a study whose order carries a clinical history, and unclaimed ones
    now = timezone.now()
    held = routed(chicago, code="70450", text="CT HEAD", completed_at=now)
    held.order.reason = "Worst headache of life"
    held.order.notes = ["Patient on warfarin"]
    held.order.save(update_fields=["reason", "notes"])
    study_claim(study_id=held.pk, user=neuro_reader, at=now)
    client = verified_client(neuro_reader)
    client.get(url)  # the session's first request settles its own bookkeeping

    def queries_for_rows(n: int) -> int:
        while len(row_ids(client.get(url))) < n:
            routed(chicago, code="70450", text="CT HEAD", completed_at=timezone.now())
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert len(row_ids(response)) == n
        return len(captured)

    # then 12 rows cost what 3 do (relations loaded with the rows, no deferred column read later)
    assert queries_for_rows(3) == queries_for_rows(12)
    with django_assert_max_num_queries(READER_ROWS_QUERIES[url]):
        html = client.get(url).content.decode()
    # and the held row is the reader's, with the order's history
    assert 'class="wl-row mine"' in html and "Worst headache of life. Patient on warfarin" in html


def test_a_readers_row_escapes_what_the_hospital_sent(verified_client, neuro_reader, chicago):
    # given an order whose procedure text and reason carry markup (HL7 is free text)
    study = routed(
        chicago, code="70450", text='CT <script>alert("x")</script> HEAD', completed_at=timezone.now()
    )
    study.order.reason = "<img src=x onerror=alert(1)>\nsecond line"
    study.order.save(update_fields=["reason"])
    # when the reader's rows are rendered (the page's rows and the pushed row are the same function)
    html = verified_client(neuro_reader).get("/worklist/rows/").content.decode()
    # then the markup arrives as text, in the attribute and in the cell, and the line break as <br>
    assert "<script>" not in html and "<img src=x" not in html
    assert 'data-procedure="CT &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; HEAD"' in html
    assert "&lt;img src=x onerror=alert(1)&gt;<br>second line" in html


def test_director_reaches_the_operations_worklist_from_the_reader_url(verified_client, director_dana):
    client = verified_client(director_dana)
    assert client.get("/worklist/")["Location"] == "/operations/worklist/"
    assert client.get("/operations/worklist/").status_code == 200


def test_navigation_offers_the_worklist_to_readers_and_operations(
    verified_client, neuro_reader, client, ops_omar, mso_mary
):
    from accounts.navigation import navigation_for

    assert "Worklist" in [i.label for i in navigation_for(neuro_reader)]
    ops_items = [(i.label, i.url) for i in navigation_for(ops_omar)]
    assert ("Worklist", "/operations/worklist/") in ops_items
    assert "Worklist" not in [i.label for i in navigation_for(mso_mary)]


@pytest.mark.parametrize(
    ("target", "minutes_left", "state", "text"),
    [
        (20, 15, "ok", "15:00"),
        (20, 9, "warning", "09:00"),
        (20, 3, "critical", "03:00"),
        (20, 0, "breached", "BREACHED"),
        (24 * 60, 90, "critical", "1:30:00"),
    ],
)
def test_sla_countdown_turns_amber_at_half_and_red_at_eighty_percent(target, minutes_left, state, text):
    # given a clock with ``target`` minutes, ``minutes_left`` of them left
    at = timezone.now()
    deadline = at + timedelta(minutes=minutes_left)
    start = deadline - timedelta(minutes=target)
    # then the first render shows the state and the time left
    assert (sla_state(start, deadline, at).state, sla_state(start, deadline, at).text) == (state, text)


def test_the_browser_ticks_with_the_escalation_thresholds(verified_client, neuro_reader):
    from worklist.clock import SLA_CRITICAL_SHARE, SLA_WARNING_SHARE

    html = verified_client(neuro_reader).get("/worklist/rows/").content.decode()
    assert f'data-sla-warning="{SLA_WARNING_SHARE}" data-sla-critical="{SLA_CRITICAL_SHARE}"' in html


def test_a_readers_page_resyncs_just_after_their_next_shift_boundary(verified_client, dr_neuro_il, chicago):
    # given a reader whose shift ends in four minutes, and their next one starting in two
    import re

    make_eligible(dr_neuro_il, chicago, shift_hours=0)
    now = timezone.now()
    Shift.objects.filter(radiologist=dr_neuro_il).update(ends_at=now + timedelta(minutes=4))
    Shift.objects.create(
        radiologist=dr_neuro_il, starts_at=now + timedelta(minutes=2), ends_at=now + timedelta(hours=3)
    )
    client = verified_client(dr_neuro_il)

    def resync_seconds() -> int:
        html = client.get("/worklist/rows/").content.decode()
        return int(re.search(r'data-resync-seconds="(\d+)"', html).group(1))

    # then the page resyncs just after the next one starts (a shift not yet covering now: the facts
    # are read with the shifts up to the resync horizon)
    assert 100 <= resync_seconds() <= 122
    # and with no boundary in the next five minutes, after the usual five
    Shift.objects.filter(radiologist=dr_neuro_il, starts_at__gt=now).delete()
    Shift.objects.filter(radiologist=dr_neuro_il).update(
        starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=2)
    )
    assert resync_seconds() == 300


def test_a_readers_pages_list_the_held_studies_then_the_others_once_each(
    verified_client, neuro_reader, chicago, monkeypatch
):
    # given pages of two rows, a reader holding one study and offered four more
    import worklist.views

    monkeypatch.setattr(worklist.views, "READER_PAGE_SIZE", 2)
    now = timezone.now()
    offered = [routed(chicago, code="70450", completed_at=now) for _ in range(5)]
    held = offered.pop()
    study_claim(study_id=held.pk, user=neuro_reader, at=now)
    client = verified_client(neuro_reader)
    pages = [row_ids(client.get(f"/worklist/rows/?page={n}")) for n in (1, 2, 3)]
    # then the held study comes first, then the others in reading order, each once, none twice
    assert pages[0][0] == held.pk
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(pk for p in pages for pk in p) == sorted([held.pk, *(s.pk for s in offered)])
    # and a page past the end shows the last one; the count is the whole list
    last = client.get("/worklist/rows/?page=9")
    assert row_ids(last) == pages[2]
    assert "Page 3 of 3 · 5 studies" in last.content.decode()


def test_a_compiled_row_moves_with_the_clock_and_changes_with_its_study(neuro_reader, chicago):
    from imaging.models import Order, Patient
    from worklist import rows

    # given a STAT head CT whose patient turns 41 tomorrow, its row rendered now (compiled, cached)
    now = timezone.now()
    study = routed(chicago, code="70450", text="CT HEAD", priority=PriorityClass.STAT, completed_at=now)
    tomorrow = (now + timedelta(days=1)).astimezone(chicago.zone).date()
    Patient.objects.filter(pk=study.patient_id).update(birth_date=tomorrow.replace(year=tomorrow.year - 41))

    def row(at):
        return rows.rows_for_reader([study.pk], viewer_id=neuro_reader.pk, at=at)[0]

    first = row(now)
    assert "40 y" in first.html and "sla-ok" in first.html and "breached" not in first.html
    # when it is rendered later — past its deadline, tomorrow, next year — from the cache
    for delay in (timedelta(minutes=45), timedelta(days=1, hours=1), timedelta(days=400)):
        day = (now + delay).astimezone(chicago.zone).date()
        age = f"{40 + (day >= tomorrow) + (day >= tomorrow.replace(year=tomorrow.year + 1))} y"
        cached = row(now + delay)
        rows._ROW_CACHE.clear()
        # then it is the row rendered afresh at that instant: countdown, due date and age moved
        assert cached == row(now + delay)
        assert 'class="wl-row breached"' in cached.html and "BREACHED" in cached.html
        assert age in cached.html
    # and an edit no signal announces (QuerySet.update) shows on the next render: the key is the content
    Order.objects.filter(pk=study.order_id).update(reason="Sudden left-sided weakness")
    assert "Sudden left-sided weakness" in row(now).html
    study_claim(study_id=study.pk, user=neuro_reader, at=now)
    assert 'class="wl-row mine"' in row(now).html


def test_a_cached_row_never_reaches_a_reader_who_may_not_see_its_study(
    verified_client, neuro_reader, chicago, lakeview
):
    from worklist import rows

    # given a Lakeshore (IL) study whose row the IL reader's page rendered, so it is compiled and cached
    now = timezone.now()
    study = routed(chicago, code="70450", text="CT HEAD", completed_at=now)
    assert study.pk in row_ids(verified_client(neuro_reader).get("/worklist/rows/"))
    assert any(compiled.pk == study.pk for compiled in rows._ROW_CACHE.values())
    # and a neuro reader eligible only at Lakeview (WI), with a study waiting there
    wi_reader = make_radiologist("neuro_wi_only", "neuro")
    make_eligible(wi_reader, lakeview)
    enrol_totp(wi_reader)
    theirs = routed(lakeview, code="70450", text="CT HEAD", completed_at=now)
    # when the WI reader fetches their rows and their page
    for url in ("/worklist/rows/", "/worklist/"):
        response = verified_client(wi_reader).get(url)
        # then they get their own study and never the cached Lakeshore row
        assert row_ids(response) == [theirs.pk]
        assert f'data-study-id="{study.pk}"' not in response.content.decode()


def test_the_row_cache_keeps_its_size_and_its_rows(neuro_reader, chicago, monkeypatch):
    from worklist import rows

    # given a cache of two rows and three studies
    monkeypatch.setattr(rows, "ROW_CACHE_SIZE", 2)
    rows._ROW_CACHE.clear()
    now = timezone.now()
    ids = [routed(chicago, code="70450", text="CT HEAD", completed_at=now).pk for _ in range(3)]
    # when their rows are rendered twice
    first = rows.rows_for_reader(ids, viewer_id=neuro_reader.pk, at=now)
    again = rows.rows_for_reader(ids, viewer_id=neuro_reader.pk, at=now)
    # then the oldest made way (never more than two kept) and every row is the same
    assert len(rows._ROW_CACHE) == 2
    assert first == again and [row.pk for row in again] == ids
