"""Sampled reads nobody may review: listed for the medical director on the adjudication page without
the reader's name, and given a reviewer by the director — never the author, never a reader without
the credentials sampling asks for, never by anyone but the director."""

import random
from decimal import Decimal

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from qa.models import PeerReview, ReviewOrigin, ReviewStatus, SamplingRate
from qa.selectors import unassignable_cases
from qa.services import ReviewRefused, peer_review_assign, peer_review_sample
from tests.qa.conftest import signed_report
from tests.worklist.conftest import make_eligible, make_study

pytestmark = pytest.mark.django_db

SECTION = "Sampled but no eligible reviewer"


@pytest.fixture
def unassignable(prairie, neuro_readers) -> PeerReview:
    """dr_white's head CT at Prairie Valley, sampled; no other reader holds privileges there."""
    from worklist.services import study_route

    SamplingRate.objects.create(facility=prairie, modality="", rate=Decimal("1"))
    study = make_study(prairie, code="70450", text="CT HEAD WO CONTRAST")
    study_route(study_id=study.pk)
    study.refresh_from_db()
    report = signed_report(study, neuro_readers[0], "No bleed. JW\nElectronically signed by Jane White, MD")
    review = peer_review_sample(report_id=report.pk, rng=random.Random(1))
    assert review.origin == ReviewOrigin.SAMPLED and review.status == ReviewStatus.UNASSIGNABLE
    return review


def test_director_sees_the_case_without_the_readers_name(verified_client, director_dana, unassignable):
    page = verified_client(director_dana).get("/qa/adjudication/").content.decode()
    # facility, modality, signed date and accession — and that nobody may review it yet
    assert SECTION in page and 'data-testid="unassignable"' in page
    study = unassignable.report.study
    for shown in ("Prairie Valley Critical Access Hospital", ">CT<", study.accession_number):
        assert shown in page
    assert unassignable.report.signed_at.astimezone(study.facility.zone).strftime("%Y-%m-%d") in page
    assert "Still nobody eligible" in page
    for trace in ("White", "Jane", "dr_white"):
        assert trace not in page


def test_a_reader_granted_privileges_since_is_offered_but_never_the_author(
    verified_client, director_dana, unassignable, neuro_readers, prairie
):
    author, okafor, lee = neuro_readers
    # given Okafor and the author herself privileged at Prairie Valley after the read was sampled
    make_eligible(okafor, prairie)
    make_eligible(author, prairie)
    cases, total = unassignable_cases(director_dana, timezone.now())
    assert total == 1 and [c.candidates for c in cases] == [(okafor,)]
    # then the page offers Okafor to assign, and still does not name the author
    page = verified_client(director_dana).get("/qa/adjudication/").content.decode()
    assert f'<option value="{okafor.pk}">{okafor}</option>' in page
    assert f'value="{author.pk}"' not in page and "White" not in page and str(lee) not in page


def test_director_assigns_an_eligible_reader(
    verified_client, director_dana, unassignable, neuro_readers, prairie
):
    okafor = neuro_readers[1]
    make_eligible(okafor, prairie)
    client = verified_client(director_dana)
    before = LogEntry.objects.get_for_object(unassignable).count()
    response = client.post(
        f"/qa/adjudication/unassignable/{unassignable.pk}/assign/", {"reviewer": okafor.pk}, follow=True
    )
    # then the case is Okafor's, on her list, audit-logged, and off the director's section
    assert f"Case {unassignable.pk} assigned to {okafor}." in response.content.decode()
    review = PeerReview.objects.get(pk=unassignable.pk)
    assert review.status == ReviewStatus.ASSIGNED and review.reviewer == okafor
    assert LogEntry.objects.get_for_object(review).count() == before + 1
    assert 'data-testid="unassignable-empty"' in response.content.decode()
    # a second assignment (another director's click, a double submit) is refused: it has one
    with pytest.raises(ReviewRefused):
        peer_review_assign(review_id=review.pk, reviewer_id=okafor.pk, by=director_dana)


def test_the_author_cannot_be_assigned(verified_client, director_dana, unassignable, neuro_readers, prairie):
    author = neuro_readers[0]
    make_eligible(author, prairie)  # eligible to read there: still not to review herself
    with pytest.raises(ValidationError, match="never reviews their own read"):
        peer_review_assign(review_id=unassignable.pk, reviewer_id=author.pk, by=director_dana)
    # through the page too (a forged form): the reason is shown, the case stays unassigned
    response = verified_client(director_dana).post(
        f"/qa/adjudication/unassignable/{unassignable.pk}/assign/", {"reviewer": author.pk}, follow=True
    )
    assert "never reviews their own read" in response.content.decode()
    assert PeerReview.objects.get(pk=unassignable.pk).status == ReviewStatus.UNASSIGNABLE


def test_a_reader_without_privileges_there_cannot_be_assigned(director_dana, unassignable, neuro_readers):
    lee = neuro_readers[2]  # licensed in IL, privileged at Lakeshore only
    with pytest.raises(ValidationError, match="may not review this case") as refused:
        peer_review_assign(review_id=unassignable.pk, reviewer_id=lee.pk, by=director_dana)
    assert "privilege" in str(refused.value).lower()
    with pytest.raises(ValidationError, match="Choose a reader"):
        peer_review_assign(review_id=unassignable.pk, reviewer_id=0, by=director_dana)
    assert PeerReview.objects.get(pk=unassignable.pk).reviewer is None


def test_only_the_director_sees_and_assigns(
    verified_client, client, unassignable, neuro_readers, prairie, admin_chicago, ops_omar
):
    okafor = neuro_readers[1]
    make_eligible(okafor, prairie)
    url = f"/qa/adjudication/unassignable/{unassignable.pk}/assign/"
    # a radiologist — even the eligible one, assigning herself — is refused
    reader = verified_client(okafor)
    assert reader.post(url, {"reviewer": okafor.pk}).status_code == 403
    assert SECTION not in reader.get("/qa/adjudication/").content.decode()
    client.logout()
    # so are a facility admin and operations
    for user in (admin_chicago, ops_omar):
        client.force_login(user)
        assert client.post(url, {"reviewer": okafor.pk}).status_code == 403
    # and the service and the selector refuse them whatever the view does
    with pytest.raises(PermissionDenied):
        peer_review_assign(review_id=unassignable.pk, reviewer_id=okafor.pk, by=okafor)
    with pytest.raises(PermissionDenied):
        unassignable_cases(ops_omar, timezone.now())
    assert PeerReview.objects.get(pk=unassignable.pk).status == ReviewStatus.UNASSIGNABLE


def test_assigning_a_missing_case_is_not_found(verified_client, director_dana, neuro_readers):
    response = verified_client(director_dana).post(
        "/qa/adjudication/unassignable/999999/assign/", {"reviewer": neuro_readers[1].pk}
    )
    assert response.status_code == 404
