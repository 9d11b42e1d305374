"""Peer-review writes (issue 7): sampling signed reads, referrals, assigning a blinded reviewer,
scoring with RADPEER, and the medical director's adjudication."""

from __future__ import annotations

import logging
import random
from datetime import datetime
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from accounts.roles import Role, has_role
from credentialing.eligibility import assess_readers
from facilities.models import Facility, PriorityClass
from qa import selectors
from qa.models import (
    ADJUDICATED_SCORES,
    Adjudication,
    PeerReview,
    RadpeerScore,
    ReviewOrigin,
    ReviewStatus,
    SamplingRate,
)
from qa.sampling import DEFAULT_RATE, is_ct_head, review_probability, sample_draw
from reports.models import Report, ReportStatus
from reports.selectors import reports_visible_to
from worklist.models import NoticeKind
from worklist.notices import study_line, user_notice_send

logger = logging.getLogger(__name__)

_system_random = random.SystemRandom()


class ReviewRefused(Exception):
    pass


# --- which reads ---------------------------------------------------------------------------------


def sampling_rate(facility_id: int, modality: str) -> Decimal:
    rates = {r.modality: r.rate for r in SamplingRate.objects.filter(facility_id=facility_id)}
    return rates.get(modality, rates.get("", DEFAULT_RATE))


def _primary_modality(modalities: str) -> str:
    from credentialing.eligibility import image_modalities

    found = image_modalities(modalities)
    return found[0] if found else ""


def report_review_probability(report: Report) -> float:
    study = report.study
    order = study.order
    return review_probability(
        sampling_rate(study.facility_id, _primary_modality(study.modalities)),
        stroke=study.is_stroke or study.priority == PriorityClass.STROKE,
        trauma=study.priority == PriorityClass.TRAUMA,
        ct_head=is_ct_head(
            modalities=study.modalities,
            body_part=study.body_part,
            procedure_code=order.procedure_code if order else "",
            procedure_text=(order.procedure_text if order else "") or study.description,
        ),
    )


def peer_review_sample(
    *, report_id: int, at: datetime | None = None, rng: random.Random | None = None
) -> PeerReview | None:
    """Draw whether a just-signed final read becomes a peer-review case; if so, open it."""
    report = Report.objects.select_related("study__order", "study__facility").get(pk=report_id)
    if report.status != ReportStatus.FINAL:
        return None
    if not sample_draw(report_review_probability(report), rng or _system_random):
        return None
    try:
        with transaction.atomic():
            return _review_open(report, origin=ReviewOrigin.SAMPLED, at=at or timezone.now())
    except IntegrityError:  # sampled already (the signal delivered twice)
        return None


def peer_review_refer(*, report_id: int, by, reason: str, at: datetime | None = None) -> PeerReview:
    """Any radiologist or the medical director may refer a signed read for review."""
    if not has_role(by, Role.RADIOLOGIST, Role.MEDICAL_DIRECTOR):
        raise PermissionDenied("Only radiologists and the medical director refer cases for peer review.")
    if not reason.strip():
        raise ValidationError("Say why the case is referred.")
    # only a report the referrer may read (the eligibility rules of ``reports_visible_to``): another
    # facility's report is DoesNotExist, the same answer as a missing one (issue 15 §6)
    report = reports_visible_to(by).select_related("study__facility").get(pk=report_id)
    if report.status != ReportStatus.FINAL:
        raise ValidationError("Only final reports are peer reviewed.")
    with transaction.atomic():
        return _review_open(
            report,
            origin=ReviewOrigin.REFERRED,
            at=at or timezone.now(),
            referred_by=by,
            reason=reason.strip(),
        )


def _review_open(
    report: Report, *, origin: str, at: datetime, referred_by=None, reason: str = ""
) -> PeerReview:
    study = report.study
    reviewer = reviewer_pick(report, at)
    review = PeerReview.objects.create(
        report=report,
        original_reader=report.signed_by,
        facility_id=study.facility_id,
        modality=_primary_modality(study.modalities),
        reviewer=reviewer,
        origin=origin,
        referred_by=referred_by,
        referral_reason=reason,
        status=ReviewStatus.ASSIGNED if reviewer else ReviewStatus.UNASSIGNABLE,
        created_at=at,
    )
    if reviewer is not None:
        _review_notice(review, at)
    return review


def _review_notice(review: PeerReview, at: datetime) -> None:
    """Tell the reviewer on their pages. Blinded: the facility and modality, nothing that names the
    original reader nor identifies the study (the review page shows what blinding allows)."""
    facility = Facility.objects.get(pk=review.facility_id)
    user_notice_send(
        user_id=review.reviewer_id,
        kind=NoticeKind.PEER_REVIEW,
        at=at,
        text=f"{facility.name} · {review.modality} case to review",
        url=reverse("qa:review", args=[review.pk]),
    )


def reviewer_pick(report: Report, at: datetime, *, exclude: tuple = ()):
    """Another reader licensed and privileged for the study, of its subspecialty, never the original
    reader (``qa.selectors.reviewer_refusal``); the one with the fewest open reviews (then the lower
    user id, so the pick is deterministic), so reviews spread evenly."""
    candidates = selectors.reviewer_candidates(report, at, exclude=exclude)
    if not candidates:
        return None
    open_counts = dict(
        PeerReview.objects.filter(reviewer__in=candidates, status=ReviewStatus.ASSIGNED)
        .values_list("reviewer")
        .annotate(n=Count("id"))
    )
    return min(candidates, key=lambda r: (open_counts.get(r.pk, 0), r.pk))


@transaction.atomic
def peer_review_assign(*, review_id: int, reviewer_id: int, by, at: datetime | None = None) -> PeerReview:
    """The medical director gives an unassignable case a reviewer: nobody was eligible when it was
    opened, but licences and privileges granted since may make someone eligible now. The same rules
    as sampling's, so the director cannot pick the author nor a reader without credentials there."""
    if not has_role(by, Role.MEDICAL_DIRECTOR):
        raise PermissionDenied("Only the medical director assigns peer reviewers.")
    review = PeerReview.objects.select_for_update().get(pk=review_id)
    # compare-and-set on the status: two directors assigning at once, one wins
    if review.status != ReviewStatus.UNASSIGNABLE:
        raise ReviewRefused("This case has a reviewer already.")
    reviewer = get_user_model().objects.filter(pk=reviewer_id, is_active=True).first()
    if reviewer is None:
        raise ValidationError("Choose a reader to review the case.")
    report = Report.objects.select_related("study__facility", "study__subspecialty").get(pk=review.report_id)
    [(_, assessment)] = assess_readers(report.study, at or timezone.now(), [reviewer])
    refusal = selectors.reviewer_refusal(report, reviewer, assessment)
    if refusal:
        raise ValidationError(f"{reviewer} may not review this case: {refusal}")
    review.reviewer, review.status = reviewer, ReviewStatus.ASSIGNED
    review.save(update_fields=["reviewer", "status"])  # audit-logged (qa.audit)
    _review_notice(review, at or timezone.now())
    return review


# --- the reviewer --------------------------------------------------------------------------------


def _review_for_reviewer(review_id: int, user) -> PeerReview:
    review = PeerReview.objects.select_for_update().filter(pk=review_id, reviewer=user).first()
    if review is None:
        raise PermissionDenied("This review is not assigned to you.")
    return review


@transaction.atomic
def peer_review_impression_record(
    *, review_id: int, user, text: str, at: datetime | None = None
) -> PeerReview:
    """The optional blind first impression, before the original report is shown; written once."""
    review = _review_for_reviewer(review_id, user)
    if review.status != ReviewStatus.ASSIGNED or review.blind_impression_at:
        raise ReviewRefused("The first impression is recorded already.")
    if not text.strip():
        raise ValidationError("Write your impression, or skip it.")
    review.blind_impression, review.blind_impression_at = text.strip(), at or timezone.now()
    review.save(update_fields=["blind_impression", "blind_impression_at"])
    return review


@transaction.atomic
def peer_review_score(
    *, review_id: int, user, score: str, comment: str, at: datetime | None = None
) -> PeerReview:
    review = _review_for_reviewer(review_id, user)
    if review.status != ReviewStatus.ASSIGNED:
        raise ReviewRefused("This review is scored already.")
    if score not in RadpeerScore.values:
        raise ValidationError(f"A RADPEER score is one of {', '.join(RadpeerScore.values)}.")
    if score in ADJUDICATED_SCORES and not comment.strip():
        raise ValidationError(f"Score {score} needs a comment saying what was missed and why it matters.")
    review.score, review.comment, review.scored_at = score, comment.strip(), at or timezone.now()
    review.status = ReviewStatus.ADJUDICATION if score in ADJUDICATED_SCORES else ReviewStatus.SCORED
    review.save(update_fields=["score", "comment", "scored_at", "status"])
    return review


# --- the medical director ------------------------------------------------------------------------


@transaction.atomic
def adjudication_decide(
    *,
    review_id: int,
    director,
    final_score: str,
    feedback: str,
    addendum_requested: bool = False,
    at: datetime | None = None,
) -> Adjudication:
    if not has_role(director, Role.MEDICAL_DIRECTOR):
        raise PermissionDenied("Only the medical director adjudicates peer review.")
    review = PeerReview.objects.select_for_update().get(pk=review_id)
    # compare-and-set on the status: two directors deciding at once, one wins
    if review.status != ReviewStatus.ADJUDICATION:
        raise ReviewRefused("This review is not awaiting adjudication.")
    if final_score not in RadpeerScore.values:
        raise ValidationError(f"A RADPEER score is one of {', '.join(RadpeerScore.values)}.")
    if not feedback.strip():
        raise ValidationError("Write the feedback the reader will see.")
    review.status = ReviewStatus.CLOSED
    review.save(update_fields=["status"])
    adjudication = Adjudication.objects.create(
        review=review,
        director=director,
        final_score=final_score,
        feedback=feedback.strip(),
        addendum_requested=addendum_requested,
        decided_at=at or timezone.now(),
    )
    # the original reader, on their pages: that there is feedback, not what it says (the page does)
    report = Report.objects.select_related("study__facility", "study__order").get(pk=review.report_id)
    user_notice_send(
        user_id=review.original_reader_id,
        kind=NoticeKind.REVIEW_FEEDBACK,
        at=adjudication.decided_at,
        study=report.study,
        text=study_line(report.study) + (" — an addendum is requested" if addendum_requested else ""),
        url=reverse("qa:feedback", args=[adjudication.pk]),
    )
    return adjudication


def adjudication_feedback_seen(*, adjudication_id: int, reader, at: datetime | None = None) -> bool:
    """The original reader opened their feedback (first time only)."""
    return bool(
        Adjudication.objects.filter(
            pk=adjudication_id, review__original_reader=reader, feedback_seen_at__isnull=True
        ).update(feedback_seen_at=at or timezone.now())
    )


def adjudication_addendum_signed(*, report_id: int, at: datetime) -> int:
    """An addendum was signed on a report whose adjudication asked for one: the request is met."""
    return Adjudication.objects.filter(
        Q(review__report_id=report_id), addendum_requested=True, addendum_signed_at__isnull=True
    ).update(addendum_signed_at=at)


# --- quarterly reports ---------------------------------------------------------------------------


def quarterly_reports_due_generate(*, at: datetime) -> int:
    """Generate every facility's report for its last complete quarter, where none exists yet.
    Idempotent: run daily (and again after a restart) it generates each report once."""
    from zoneinfo import ZoneInfo

    from facilities.models import Facility
    from qa.metrics import previous_quarter
    from qa.models import QuarterlyReport
    from qa.quarterly import quarterly_report_generate

    generated = 0
    for facility in Facility.objects.all():
        year, quarter = previous_quarter(at.astimezone(ZoneInfo(facility.timezone)).date())
        if not QuarterlyReport.objects.filter(facility=facility, year=year, quarter=quarter).exists():
            quarterly_report_generate(facility=facility, year=year, quarter=quarter)
            generated += 1
    return generated
