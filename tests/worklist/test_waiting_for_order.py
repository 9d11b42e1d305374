"""The operations worklist shows studies still without their order after the facility's wait
(issue #13, docs/orders.md), each with the link to find the order it should have matched."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from imaging.models import Patient, StudyStatus
from tests.worklist.conftest import make_study

pytestmark = pytest.mark.django_db


def _waiting_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-testid="waiting-row" data-study-id="(\d+)"', html)]


def test_orderless_studies_past_their_facilitys_wait_are_listed_with_the_link_to_match(
    client, ops_omar, chicago, lakeview
):
    now = timezone.now()
    chicago.orderless_wait_minutes = 30
    chicago.save()
    lakeview.orderless_wait_minutes = 120
    lakeview.save()
    patient = Patient.objects.create(facility=chicago, mrn="MRN7070", assigning_authority="LAKESHORE")
    # given a Chicago study 45 min without its order, one 10 min old, one with its order,
    # a Lakeview study 60 min old (its facility waits 120), and a finished one
    late = make_study(chicago, first_received_at=now - timedelta(minutes=45))
    late.patient = patient
    late.save(update_fields=["patient"])
    young = make_study(chicago, first_received_at=now - timedelta(minutes=10))
    ordered = make_study(chicago, code="70450", first_received_at=now - timedelta(hours=3))
    patient_wait = make_study(lakeview, first_received_at=now - timedelta(minutes=60))
    read = make_study(chicago, first_received_at=now - timedelta(hours=5), status=StudyStatus.FINAL)
    older = make_study(chicago, first_received_at=now - timedelta(hours=2))
    client.force_login(ops_omar)
    # when operations open their worklist (and its live rows)
    for url in ("/operations/worklist/", "/operations/worklist/rows/"):
        html = client.get(url).content.decode()
        # then only the studies past their own facility's wait, oldest first
        assert _waiting_ids(html) == [older.pk, late.pk], url
        assert "Waiting for their order (2)" in html
    assert {young.pk, ordered.pk, patient_wait.pk, read.pk}.isdisjoint(_waiting_ids(html))
    row = html[html.index(f'data-study-id="{late.pk}"') :]
    assert re.search(r'data-testid="waited">4[56] min', row)
    # and the link searches the facility's inbound HL7 for the patient's order
    link = re.search(r'data-testid="match-link" href="([^"]+)"', row).group(1).replace("&amp;", "&")
    assert link == "/operations/interfaces/messages/?direction=in&facility=CHI-L1&mrn=MRN7070"
    assert client.get(link).status_code == 200


def test_the_facility_filter_narrows_the_waiting_list(client, ops_omar, chicago, lakeview):
    now = timezone.now()
    chicago_late = make_study(chicago, first_received_at=now - timedelta(hours=3))
    lakeview_late = make_study(lakeview, first_received_at=now - timedelta(hours=3))
    client.force_login(ops_omar)
    html = client.get("/operations/worklist/?facility=WI-LAKEVIEW").content.decode()
    assert _waiting_ids(html) == [lakeview_late.pk] and chicago_late.pk not in _waiting_ids(html)


def test_more_than_a_page_waiting_is_paged_on_the_page_and_over_rest(client, ops_omar, chicago, lakeview):
    # given 60 Chicago studies past the wait (one a minute, oldest first), a Lakeview one past its
    # longer wait and a Lakeview one within it: more than the page's 50
    now = timezone.now()
    lakeview.orderless_wait_minutes = 600
    lakeview.save()
    chicago_ids = [
        make_study(chicago, first_received_at=now - timedelta(minutes=200 - n)).pk for n in range(60)
    ]
    lakeview_late = make_study(lakeview, first_received_at=now - timedelta(minutes=700)).pk
    make_study(lakeview, first_received_at=now - timedelta(minutes=300))  # within Lakeview's wait
    everyone = [lakeview_late, *chicago_ids]  # oldest first
    client.force_login(ops_omar)
    # when operations open the worklist: page one is the 50 oldest, and says how many wait
    html = client.get("/operations/worklist/").content.decode()
    assert _waiting_ids(html) == everyone[:50]
    assert "Waiting for their order (61)" in html and "Page 1 of 2 · 61 studies" in html
    # and the next page (kept by the live rows) is the other 11, the facility filter still applying
    following = re.search(r'href="\?([^"]+)" data-testid="waiting-next"', html).group(1).replace("&amp;", "&")
    assert following == "waiting_page=2"
    for url in ("/operations/worklist/?waiting_page=2", "/operations/worklist/rows/?waiting_page=2"):
        assert _waiting_ids(client.get(url).content.decode()) == everyone[50:], url
    filtered = client.get("/operations/worklist/?facility=CHI-L1&waiting_page=2").content.decode()
    assert _waiting_ids(filtered) == chicago_ids[50:]
    assert 'href="?facility=CHI-L1&amp;waiting_page=1"' in filtered
    # and over REST: limit/offset as the rest of the API, the same order, every row once
    url = "/api/v1/worklist/waiting-for-order/"
    first = client.get(url).json()
    assert first["count"] == 61 and first["previous"] is None
    assert [r["id"] for r in first["results"]] == everyone[:50]
    second = client.get(first["next"]).json()
    assert [r["id"] for r in second["results"]] == everyone[50:] and second["next"] is None
    small = client.get(url, {"limit": 20, "offset": 40, "facility": "CHI-L1"}).json()
    assert small["count"] == 60 and [r["id"] for r in small["results"]] == chicago_ids[40:60]


@pytest.mark.parametrize("who", ["admin_chicago", "dr_neuro_il"])
def test_every_page_of_the_waiting_list_is_refused_to_other_roles(
    request, client, verified_client, chicago, who
):
    # given more than a page waiting
    now = timezone.now()
    for n in range(51):
        make_study(chicago, first_received_at=now - timedelta(hours=2, minutes=n))
    user = request.getfixturevalue(who)
    if who == "admin_chicago":
        client.force_login(user)
    else:
        verified_client(user)  # a signing role passes its second factor first
    # then neither the page's second page, its live rows nor the API's second page answer them
    for url in ("/operations/worklist/?waiting_page=2", "/operations/worklist/rows/?waiting_page=2"):
        response = client.get(url)
        assert response.status_code == 403 and b"waiting-row" not in response.content, url
    response = client.get("/api/v1/worklist/waiting-for-order/", {"limit": 50, "offset": 50})
    assert response.status_code == 403 and "results" not in response.json()


def test_the_anonymous_get_no_page_of_it(client, chicago):
    api = client.get("/api/v1/worklist/waiting-for-order/", {"limit": 50, "offset": 50})
    assert api.status_code == 401
    page = client.get("/operations/worklist/?waiting_page=2")
    assert page.status_code == 302 and page["Location"].startswith("/login/")
