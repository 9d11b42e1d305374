"""Peer-review reads — and the one place that decides who may see what (issue 7):

* a reviewer sees the cases assigned to them, blinded: the study and the original report's text
  with the reader redacted, never the reader's name or id;
* the original reader sees the director's feedback on their own cases, never the reviewer;
* the medical director sees everything;
* facility admins see aggregates of their facilities only, under pseudonymous reader ids.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet

from accounts.audit import ReadKind, record_phi_access
from accounts.roles import Role, has_role
from credentialing.eligibility import Assessment, ReasonCode, assess_readers
from credentialing.models import Subspecialty
from qa.blinding import redact_reader
from qa.models import ADJUDICATED_SCORES, Adjudication, PeerReview, ReviewStatus

# Shift does not matter for a peer review: it waits on the reviewer's list as a low-priority item.
_REVIEWER_IGNORES = {ReasonCode.SHIFT}
# Unassignable cases pile up where a facility has no second reader of a subspecialty; each row
# runs the eligibility engine, so the page shows the oldest few and counts the rest.
UNASSIGNABLE_SHOWN = 25


def reviews_assigned_to(user) -> QuerySet[PeerReview]:
    """Open reviews on the reviewer's list, oldest first (a low-priority worklist item)."""
    return (
        PeerReview.objects.filter(reviewer=user, status=ReviewStatus.ASSIGNED)
        .select_related("report__study__facility", "report__study__order", "original_reader")
        .order_by("created_at", "id")
    )


@dataclass(frozen=True)
class BlindedCase:
    """What a reviewer is shown: no field here may name or identify the original reader."""

    review_id: int
    study_id: int
    facility: str
    procedure: str
    modality: str
    status: str
    report_text: str | None  # None until the blind first impression is given or skipped
    blind_impression: str


def review_case_for_reviewer(user, review_id: int, *, reveal_report: bool) -> BlindedCase:
    review = (
        PeerReview.objects.select_related(
            "report__study__facility", "report__study__order", "original_reader"
        )
        .filter(pk=review_id, reviewer=user)
        .first()
    )
    if review is None:
        raise PermissionDenied("This review is not assigned to you.")
    record_phi_access(
        review.report.study, kind=ReadKind.PEER_REVIEW
    )  # a peer-review case shows the patient's study and report
    return blinded_case(review, reveal_report=reveal_report)


def blinded_case(review: PeerReview, *, reveal_report: bool = False) -> BlindedCase:
    """What the reviewer is shown of a case already fetched for them (the list's rows included)."""
    study = review.report.study
    shown = reveal_report or review.blind_impression_at is not None or review.status != ReviewStatus.ASSIGNED
    return BlindedCase(
        review_id=review.pk,
        study_id=study.pk,
        facility=study.facility.name,
        procedure=(study.order.procedure_text if study.order_id else "") or study.description,
        modality=review.modality,
        status=review.status,
        report_text=redact_reader(review.report.signed_text, review.original_reader) if shown else None,
        blind_impression=review.blind_impression,
    )


def blinded_reports_for(user) -> QuerySet:
    """Ids of the reports ``user`` reviews (or reviewed) blinded: for them every page, API and FHIR
    resource that names the signer answers 404 — the reviewer sees the case only through the
    blinded review page and the images (issue 15 §6). Kept after scoring too: the reader's
    identity is not the reviewer's to learn. Lower apps (reports, imaging) call this at call time,
    as ``imaging.selectors`` reads the review's study."""
    if not user.is_authenticated:
        return PeerReview.objects.none().values("report_id")
    return PeerReview.objects.filter(reviewer=user).values("report_id")


# --- who may review -------------------------------------------------------------------------------


def reviewer_refusal(report, reader, assessment: Assessment) -> str | None:
    """Why ``reader`` may not review ``report``, or None. The rules sampling assigns by: never the
    original reader; the eligibility engine's answer without the shift rule; for a subspecialty
    study, a reader who lists that subspecialty (stricter than reading it, which general readers
    may do at some facilities: a peer's judgement is worth most from the same subspecialty)."""
    if reader.pk == report.signed_by_id:
        return "the original reader never reviews their own read"
    reasons = [str(r) for r in assessment.reasons if r.code not in _REVIEWER_IGNORES]
    if reasons:
        return "; ".join(reasons)
    study = report.study
    if study.subspecialty_id is None or study.subspecialty.code == Subspecialty.GENERAL:
        return None
    if not reader.radiologist_profile.subspecialties.filter(pk=study.subspecialty_id).exists():
        return f"does not list {study.subspecialty}, the study's subspecialty"
    return None


def reviewer_candidates(report, at: datetime, *, radiologists=None, exclude: tuple = ()) -> list:
    """The readers who may review ``report`` (all active radiologists, or those given)."""
    return [
        reader
        for reader, assessment in assess_readers(report.study, at, radiologists)
        if reader.pk not in exclude and reviewer_refusal(report, reader, assessment) is None
    ]


def adjudication_queue(user) -> QuerySet[PeerReview]:
    if not has_role(user, Role.MEDICAL_DIRECTOR):
        raise PermissionDenied("The adjudication queue is the medical director's.")
    return (
        PeerReview.objects.filter(status=ReviewStatus.ADJUDICATION)
        .select_related("report__study__facility", "original_reader", "reviewer")
        .order_by("scored_at", "id")
    )


@dataclass(frozen=True)
class UnassignableCase:
    """A sampled or referred read nobody could review, as the director's list shows it. No field
    names the reader: finding a reviewer does not need it, and the list is on a page the director
    may show a colleague."""

    review_id: int
    facility: object  # the Facility, for its name and its zone (times are shown in it)
    modality: str
    accession_number: str
    signed_at: datetime
    origin: str
    candidates: tuple  # readers who may review it now (credentials change after sampling)


def unassignable_cases(user, at: datetime) -> tuple[list[UnassignableCase], int]:
    """The oldest unassignable cases with who may review them now, and how many there are in all."""
    if not has_role(user, Role.MEDICAL_DIRECTOR):
        raise PermissionDenied("Unassignable peer reviews are the medical director's.")
    reviews = (
        PeerReview.objects.filter(status=ReviewStatus.UNASSIGNABLE)
        .select_related("report__study__facility", "report__study__subspecialty")
        .order_by("created_at", "id")
    )
    cases = [
        UnassignableCase(
            review_id=review.pk,
            facility=review.report.study.facility,
            modality=review.modality,
            accession_number=review.report.study.accession_number,
            signed_at=review.report.signed_at,
            origin=review.get_origin_display(),
            candidates=tuple(reviewer_candidates(review.report, at)),
        )
        for review in reviews[:UNASSIGNABLE_SHOWN]
    ]
    return cases, reviews.count()


def feedback_for_reader(user) -> QuerySet[Adjudication]:
    """The director's feedback on the reader's own reviewed reads. Callers show final score,
    feedback and the study; the reviewer is not selected at all."""
    return (
        Adjudication.objects.filter(review__original_reader=user)
        .select_related("review__report__study__facility")
        .order_by("-decided_at")
    )


# --- aggregates ----------------------------------------------------------------------------------


def reader_pseudonym(user_id: int) -> str:
    """A stable id that does not reveal the reader: HMAC of the user id under the secret key."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"qa-reader:{user_id}".encode(), hashlib.sha256)
    return "R-" + digest.hexdigest()[:6].upper()


def wilson_interval(events: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound at the small counts QA works with)."""
    if total == 0:
        return (0.0, 0.0)
    p = events / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class DiscrepancyRow:
    key: str  # a reader pseudonym, a modality, a facility code …
    reviewed: int
    significant: int  # 2b, 3a, 3b (after adjudication where decided)

    @property
    def rate(self) -> float:
        return self.significant / self.reviewed if self.reviewed else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.significant, self.reviewed)


def _scored(facility_ids: list[int] | None, start: datetime, end: datetime) -> QuerySet[PeerReview]:
    reviews = PeerReview.objects.filter(scored_at__gte=start, scored_at__lt=end).exclude(score="")
    return reviews if facility_ids is None else reviews.filter(facility_id__in=facility_ids)


def discrepancy_rates(
    *, by: str, start: datetime, end: datetime, facility_ids: list[int] | None = None
) -> list[DiscrepancyRow]:
    """Reviewed and significant-discrepancy counts grouped ``by`` reader (pseudonymous), modality or
    facility. The adjudicated score replaces the reviewer's where the director decided."""
    field = {"reader": "original_reader_id", "modality": "modality", "facility": "facility__code"}[by]
    significant = Q(adjudication__final_score__in=ADJUDICATED_SCORES) | Q(
        adjudication__isnull=True, score__in=ADJUDICATED_SCORES
    )
    rows = (
        _scored(facility_ids, start, end)
        .values(field)
        .annotate(reviewed=Count("id"), significant=Count("id", filter=significant))
        .order_by(field)
    )
    return [
        DiscrepancyRow(
            key=reader_pseudonym(row[field]) if by == "reader" else str(row[field]),
            reviewed=row["reviewed"],
            significant=row["significant"],
        )
        for row in rows
    ]


# --- quarterly reports ---------------------------------------------------------------------------


def quarterly_facilities_for(user) -> QuerySet:
    """Facilities whose quarterly QA reports the user may download: the medical director and
    operations every facility's; a facility admin only their own (aggregates, pseudonymous)."""
    from facilities.models import Facility
    from facilities.selectors import facilities_administered_by

    if user.is_superuser or has_role(user, Role.MEDICAL_DIRECTOR, Role.OPERATIONS):
        return Facility.objects.all()
    return facilities_administered_by(user)


def access_quarterly_report(user, facility_code: str, year: int, quarter: int):
    """The stored report, or 404 alike for another facility's and a missing one."""
    from django.http import Http404

    from qa.models import QuarterlyReport

    report = QuarterlyReport.objects.filter(
        facility__in=quarterly_facilities_for(user), facility__code=facility_code, year=year, quarter=quarter
    ).first()
    if report is None:
        raise Http404("No such report")
    return report
