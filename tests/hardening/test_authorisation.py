"""Issue 15 §6 and §9: the authorisation gaps the audit found, each driven as the wrong user.

* peer review: only someone who may read a report refers it; a blinded reviewer finds the original
  reader's name or NPI in no page, API or FHIR response reachable from their case;
* anonymous calls to the credentialing API get 401 (not an empty 200 list);
* ``/admin/`` refuses a signed-in non-staff user with 403 (it looped) and sends the anonymous to
  the login page;
* the eligibility API answers 404 for another facility's study."""

from __future__ import annotations

import pytest
from django.test import Client

from qa.models import PeerReview
from tests.conftest import enrol_totp, make_radiologist
from tests.worklist.conftest import make_eligible, make_study

pytestmark = pytest.mark.django_db

AUTHOR_NPI = "1245319599"


def _outsider(lakeview):
    """A neuro reader eligible at Lakeview only: Lakeshore's reports are not theirs to read."""
    reader = make_radiologist("dr_far", "neuro")
    make_eligible(reader, lakeview)
    enrol_totp(reader)
    return reader


def test_referral_needs_a_reader_who_may_read_the_report(
    verified_client, head_ct_read, lakeview, neuro_readers
):
    # given a reader of another facility
    outsider = _outsider(lakeview)
    client = verified_client(outsider)
    # when they refer Lakeshore's final read: 404, as for a missing report, and no review opens
    response = client.post(f"/qa/refer/{head_ct_read.pk}/", {"reason": "curious"})
    assert response.status_code == 404
    assert not PeerReview.objects.filter(report=head_ct_read).exists()
    # a colleague eligible at Lakeshore may refer it
    colleague = verified_client(neuro_readers[2])
    response = colleague.post(f"/qa/refer/{head_ct_read.pk}/", {"reason": "ED callback"})
    assert response.status_code == 302
    assert PeerReview.objects.filter(report=head_ct_read, referred_by=neuro_readers[2]).exists()


def _traces(author) -> list[str]:
    return [author.first_name, author.last_name, author.username, AUTHOR_NPI]


def test_blinded_reviewer_finds_the_reader_nowhere(verified_client, referred, neuro_readers):
    author = neuro_readers[0]
    author.radiologist_profile.npi = AUTHOR_NPI
    author.radiologist_profile.save(update_fields=["npi"])
    report, study_id = referred.report, referred.report.study_id
    reviewer = verified_client(referred.reviewer)
    reviewer.post(f"/qa/reviews/{referred.pk}/impression/", {"impression": "No bleed"})
    # the case and its images open, and the viewer offers no link to the report
    case = reviewer.get(f"/qa/reviews/{referred.pk}/")
    viewer = reviewer.get(f"/studies/{study_id}/viewer/")
    assert case.status_code == 200 and viewer.status_code == 200
    assert b'data-testid="report-link"' not in viewer.content
    # every route that names the signer is refused
    refused = {
        f"/studies/{study_id}/report/": 404,
        f"/studies/{study_id}/report.pdf": 404,
        f"/studies/{study_id}/report/priors/": 404,
        f"/api/v1/reports/{report.pk}/": 404,
        f"/fhir/r4/DiagnosticReport/{report.pk}": 404,
    }
    for url, status in refused.items():
        assert reviewer.get(url).status_code == status, url
    listed = reviewer.get("/api/v1/reports/")
    assert listed.status_code == 200 and report.pk not in [r["id"] for r in listed.json()["results"]]
    searched = reviewer.get("/fhir/r4/DiagnosticReport", {"_id": report.pk})
    assert searched.status_code == 200 and not searched.json().get("entry")
    # and no response reachable from the case names the reader
    urls = [f"/qa/reviews/{referred.pk}/", f"/studies/{study_id}/viewer/", "/qa/reviews/", "/api/v1/reports/"]
    for url in [*urls, *refused]:
        body = reviewer.get(url).content.decode(errors="replace")
        for trace in _traces(author):
            assert trace not in body, (url, trace)
    # the same routes name her to a reader who is not blinded (the test can fail)
    reviewer.logout()
    other = next(r for r in neuro_readers[1:] if r != referred.reviewer)
    colleague = verified_client(other)
    assert "White" in colleague.get(f"/studies/{study_id}/report/").content.decode()
    assert AUTHOR_NPI in colleague.get(f"/fhir/r4/DiagnosticReport/{report.pk}").content.decode()


CREDENTIALING_LISTS = [
    "/api/v1/credentialing/profiles/",
    "/api/v1/credentialing/licences/",
    "/api/v1/credentialing/boards/",
    "/api/v1/credentialing/fellowships/",
    "/api/v1/credentialing/dea/",
    "/api/v1/credentialing/malpractice/",
    "/api/v1/credentialing/privileges/",
    "/api/v1/credentialing/documents/",
]


@pytest.mark.parametrize("url", CREDENTIALING_LISTS)
def test_anonymous_credentialing_api_calls_get_401(client, neuro_il_credentials, url):
    response = client.get(url)
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert "detail" in response.json()


def test_anonymous_eligibility_call_gets_401(client, dr_neuro_il, chicago):
    study = make_study(chicago, code="70450", text="CT HEAD")
    response = client.get("/api/v1/eligibility/", {"radiologist": dr_neuro_il.pk, "study": study.pk})
    assert response.status_code == 401


def test_admin_refuses_non_staff_with_403_and_sends_the_anonymous_to_login(
    verified_client, dr_neuro_il, mso_mary
):
    # a signed-in radiologist (not staff): 403, not a redirect back to the login page (it looped)
    client = verified_client(dr_neuro_il)
    for url in ("/admin/", "/admin/imaging/study/", "/admin/facilities/facility/"):
        response = client.get(url)
        assert response.status_code == 403, url
        assert b"staff" in response.content
    client.logout()
    # anonymous: the one login page
    anonymous = Client()
    response = anonymous.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    response = anonymous.get(response["Location"])
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    # staff still get in
    client.force_login(mso_mary)
    assert client.get("/admin/").status_code == 200


def test_eligibility_of_another_facilitys_study_is_404(
    verified_client, dr_neuro_il, neuro_il_credentials, chicago, lakeview
):
    own = make_study(chicago, code="70450", text="CT HEAD")
    foreign = make_study(lakeview, code="70450", text="CT HEAD")
    client = verified_client(dr_neuro_il)
    ask = {"radiologist": dr_neuro_il.pk}
    assert client.get("/api/v1/eligibility/", {**ask, "study": own.pk}).status_code == 200
    response = client.get("/api/v1/eligibility/", {**ask, "study": foreign.pk})
    # the same answer as for a missing study, and nothing of Lakeview in it
    assert response.status_code == 404
    missing = client.get("/api/v1/eligibility/", {**ask, "study": 999999})
    assert response.json() == missing.json()
    assert lakeview.state not in response.content.decode() and lakeview.name not in response.content.decode()
