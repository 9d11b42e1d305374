"""Each algorithm measured at each facility, by finding (docs/ai.md): a site needs its algorithms'
accuracy as measured on its own patients, not the vendor's sheet (one PE series: 36 confirmed of 104
alerts).

Per facility × algorithm × finding over a period (the AI result's arrival):

* **positives**: findings the algorithm reported present;
* **PPV**: the reader-confirmed share — *agree* among positives with an assessable verdict
  (*not assessable* and no verdict are left out of both counts), with a 95 % Wilson interval;
* **misses**: findings the algorithm reported absent that the reader disagreed with, or whose report
  was marked critical — among the negatives, with a Wilson interval;
* **minutes from AI result to claim** (median): re-ranked studies against the other studies of the
  same priority class with a result from this algorithm that were not re-ranked.

``ai_ppv_alerts_raise`` raises an operations alert when an algorithm's PPV falls below the facility's
``ai_ppv_alert_threshold`` (once per episode; cleared when it recovers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from statistics import median

from django.db import transaction
from django.utils import timezone

from imaging.models import AiFinding
from qa.models import AiAlgorithmAlert
from qa.selectors import wilson_interval
from reports.models import AiVerdictChoice
from worklist.models import StudyEvent, StudyEventKind

MIN_ASSESSED_FOR_ALERT = 5  # fewer reader-assessed positives say too little to page operations


@dataclass
class AlgorithmRow:
    facility: str
    algorithm: str
    finding: str  # the code's meaning (code)
    code: str
    positives: int = 0
    confirmed: int = 0
    refuted: int = 0
    negatives: int = 0
    misses: int = 0
    reranked_minutes: list[float] = field(default_factory=list)
    other_minutes: list[float] = field(default_factory=list)

    @property
    def assessed(self) -> int:
        return self.confirmed + self.refuted

    @property
    def ppv(self) -> float | None:
        return self.confirmed / self.assessed if self.assessed else None

    @property
    def ppv_interval(self) -> tuple[float, float]:
        return wilson_interval(self.confirmed, self.assessed)

    @property
    def miss_rate(self) -> float | None:
        return self.misses / self.negatives if self.negatives else None

    @property
    def miss_interval(self) -> tuple[float, float]:
        return wilson_interval(self.misses, self.negatives)

    @property
    def reranked_median(self) -> float | None:
        return median(self.reranked_minutes) if self.reranked_minutes else None

    @property
    def other_median(self) -> float | None:
        return median(self.other_minutes) if self.other_minutes else None


def algorithm_performance(
    *, start: datetime, end: datetime, facility_ids: list[int] | None = None
) -> list[AlgorithmRow]:
    findings = AiFinding.objects.filter(result__received_at__gte=start, result__received_at__lt=end)
    if facility_ids is not None:
        findings = findings.filter(result__facility_id__in=facility_ids)
    findings = findings.select_related(
        "result__facility", "result__study__turnaround", "result__study__report"
    ).prefetch_related("verdicts")
    findings = list(findings)
    reranked = set(
        StudyEvent.objects.filter(
            kind=StudyEventKind.AI_RERANKED, study_id__in={f.result.study_id for f in findings}
        ).values_list("study_id", flat=True)
    )
    rows: dict[tuple, AlgorithmRow] = {}
    # minutes to claim, per (facility, algorithm, class): the comparison is within a class
    for f in findings:
        result = f.result
        key = (result.facility.code, result.algorithm, f.code_value)
        row = rows.get(key) or rows.setdefault(
            key, AlgorithmRow(key[0], key[1], f"{f.meaning} ({f.code_value})", f.code_value)
        )
        verdicts = {v.verdict for v in f.verdicts.all()}
        critical = bool(getattr(_report(result.study), "is_critical", False))
        if f.present:
            row.positives += 1
            row.confirmed += AiVerdictChoice.AGREE in verdicts
            row.refuted += AiVerdictChoice.DISAGREE in verdicts and AiVerdictChoice.AGREE not in verdicts
        else:
            row.negatives += 1
            row.misses += AiVerdictChoice.DISAGREE in verdicts or critical
        minutes = _minutes_to_claim(result)
        if minutes is not None and f.present:
            (row.reranked_minutes if result.study_id in reranked else row.other_minutes).append(minutes)
    return sorted(rows.values(), key=lambda r: (r.facility, r.algorithm, r.finding))


def _report(study):
    try:
        return study.report
    except Exception:
        return None


def _minutes_to_claim(result) -> float | None:
    try:
        claimed = result.study.turnaround.first_claimed_at
    except Exception:
        return None
    if claimed is None:
        return None
    return max(0.0, (claimed - result.received_at).total_seconds() / 60)


@transaction.atomic
def ai_ppv_alerts_raise(
    *, start: datetime, end: datetime, at: datetime | None = None
) -> list[AiAlgorithmAlert]:
    """Raise (once per episode) an alert for each algorithm × finding whose PPV is below its
    facility's threshold; clear the episodes that recovered. Operations hear of new ones."""
    from facilities.models import Facility
    from worklist.broadcast import operations_event_send

    at = at or timezone.now()
    thresholds = dict(
        Facility.objects.filter(ai_ppv_alert_threshold__isnull=False).values_list(
            "code", "ai_ppv_alert_threshold"
        )
    )
    raised = []
    for row in algorithm_performance(start=start, end=end):
        threshold = thresholds.get(row.facility)
        if threshold is None or row.assessed < MIN_ASSESSED_FOR_ALERT:
            continue
        open_alert = AiAlgorithmAlert.objects.filter(
            facility__code=row.facility, algorithm=row.algorithm, finding_code=row.code, cleared_at=None
        ).first()
        if row.ppv >= threshold:
            if open_alert is not None:
                open_alert.cleared_at = at
                open_alert.save(update_fields=["cleared_at"])
            continue
        if open_alert is not None:
            continue
        alert = AiAlgorithmAlert.objects.create(
            facility=Facility.objects.get(code=row.facility),
            algorithm=row.algorithm,
            finding_code=row.code,
            finding=row.finding,
            ppv=row.ppv,
            threshold=threshold,
            assessed=row.assessed,
            raised_at=at,
        )
        operations_event_send(
            {
                "type": "qa.ai_ppv_alert",
                "facility": row.facility,
                "algorithm": row.algorithm,
                "finding": row.finding,
                "ppv": round(row.ppv, 3),
                "threshold": threshold,
            }
        )
        raised.append(alert)
    return raised
