"""Peer review (issue 7): blinded re-reads of signed reports, scored with RADPEER (2016), and the
medical director's adjudication of the significant discrepancies.

Confidentiality is the point of these tables: the reviewer never learns whose read they review, the
original reader never learns who reviewed them, facility admins see only aggregates under
pseudonymous reader ids. Every read goes through ``qa.selectors``; every change is audit-logged."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class RadpeerScore(models.TextChoices):
    """ACR RADPEER 2016 (DESIGN.md §6)."""

    CONCUR = "1", "1 — concur with interpretation"
    MISS_UNLIKELY = (
        "2a",
        "2a — discrepancy, not ordinarily expected to be made; unlikely clinically significant",
    )
    MISS_LIKELY = "2b", "2b — discrepancy, not ordinarily expected to be made; likely clinically significant"
    SHOULD_UNLIKELY = (
        "3a",
        "3a — discrepancy, should be made most of the time; unlikely clinically significant",
    )
    SHOULD_LIKELY = "3b", "3b — discrepancy, should be made most of the time; likely clinically significant"


# Scores that must be explained and go to the medical director (DESIGN.md §6).
ADJUDICATED_SCORES = frozenset(
    {RadpeerScore.MISS_LIKELY, RadpeerScore.SHOULD_UNLIKELY, RadpeerScore.SHOULD_LIKELY}
)


class SamplingRate(models.Model):
    """The share of a facility's final reads that become peer-review cases; ``modality`` blank = all
    modalities of the facility; without a row qa.sampling.DEFAULT_RATE (5 %)."""

    facility = models.ForeignKey("facilities.Facility", on_delete=models.CASCADE, related_name="+")
    modality = models.CharField(max_length=16, blank=True)
    rate = models.DecimalField(
        max_digits=4, decimal_places=3, validators=[MinValueValidator(0), MaxValueValidator(1)]
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["facility", "modality"], name="sampling_rate_unique"),
            models.CheckConstraint(condition=Q(rate__gte=0) & Q(rate__lte=1), name="sampling_rate_is_share"),
        ]

    def __str__(self) -> str:
        return f"{self.facility} {self.modality or 'all'}: {self.rate:%}"


class ReviewOrigin(models.TextChoices):
    SAMPLED = "sampled", "Random sample"
    REFERRED = "referred", "Referred"


class ReviewStatus(models.TextChoices):
    ASSIGNED = "assigned", "Assigned"
    SCORED = "scored", "Scored"  # 1 or 2a: closed without adjudication
    ADJUDICATION = "adjudication", "Awaiting the medical director"
    CLOSED = "closed", "Adjudicated"
    UNASSIGNABLE = "unassignable", "No eligible reviewer"


class PeerReview(models.Model):
    report = models.ForeignKey("reports.Report", on_delete=models.PROTECT, related_name="peer_reviews")
    # Denormalised from the report for the confidentiality filters and the aggregates.
    original_reader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    facility = models.ForeignKey("facilities.Facility", on_delete=models.PROTECT, related_name="+")
    modality = models.CharField(max_length=16, blank=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    origin = models.CharField(max_length=16, choices=ReviewOrigin.choices)
    referred_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    referral_reason = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.ASSIGNED)
    created_at = models.DateTimeField()
    blind_impression = models.TextField(
        blank=True, help_text="The reviewer's own impression, before the report"
    )
    blind_impression_at = models.DateTimeField(null=True, blank=True)
    score = models.CharField(max_length=2, choices=RadpeerScore.choices, blank=True)
    comment = models.TextField(blank=True)
    scored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = [
            # never one's own case
            models.CheckConstraint(
                condition=~Q(reviewer=models.F("original_reader")), name="review_not_self"
            ),
            models.UniqueConstraint(
                fields=["report"], condition=Q(origin="sampled"), name="review_one_sample_per_report"
            ),
        ]
        indexes = [
            models.Index(fields=["reviewer", "status"], name="review_reviewer_status_idx"),
            models.Index(fields=["facility", "scored_at"], name="review_facility_scored_idx"),
        ]

    def __str__(self) -> str:
        return f"peer review {self.pk} ({self.status})"


class Adjudication(models.Model):
    """The medical director's decision on a 2b/3a/3b review."""

    review = models.OneToOneField(PeerReview, on_delete=models.PROTECT, related_name="adjudication")
    director = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    final_score = models.CharField(max_length=2, choices=RadpeerScore.choices)
    feedback = models.TextField(help_text="To the original reader; they see it without the reviewer's name")
    addendum_requested = models.BooleanField(default=False)
    addendum_signed_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField()
    feedback_seen_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"adjudication of review {self.review_id}: {self.final_score}"


class QuarterlyReport(models.Model):
    """A facility's quarterly QA report as generated (aggregates only, pseudonymous readers)."""

    facility = models.ForeignKey("facilities.Facility", on_delete=models.PROTECT, related_name="+")
    year = models.PositiveSmallIntegerField()
    quarter = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(4)])
    generated_at = models.DateTimeField()
    figures = models.JSONField()
    csv = models.TextField()
    pdf = models.BinaryField()

    class Meta:
        ordering = ["-year", "-quarter", "facility_id"]
        constraints = [
            models.UniqueConstraint(fields=["facility", "year", "quarter"], name="quarterly_report_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.facility} {self.year}-Q{self.quarter}"


class AiAlgorithmAlert(models.Model):
    """An algorithm whose reader-confirmed share (PPV) fell below its facility's threshold
    (``qa.ai_metrics.ai_ppv_alerts_raise``): one row per episode, cleared when it recovers."""

    facility = models.ForeignKey("facilities.Facility", on_delete=models.CASCADE, related_name="+")
    algorithm = models.CharField(max_length=200)
    finding_code = models.CharField(max_length=64)
    finding = models.CharField(max_length=300)
    ppv = models.FloatField()
    threshold = models.FloatField()
    assessed = models.PositiveIntegerField()
    raised_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised_at", "id"]

    def __str__(self) -> str:
        return (
            f"{self.facility_id} {self.algorithm} {self.finding}: PPV {self.ppv:.0%} < {self.threshold:.0%}"
        )
