"""The quarterly QA report of one facility (issue 7): volume by modality, radiologist TAT p50/p90 per
priority class against the contract, SLA compliance, discrepancy rates under pseudonymous reader ids.

Figures are computed from the signed reports of the quarter at the facility (facility-local calendar
quarter); TAT is exam complete (or order time for a code stroke: the clock's start) → final
signature; "within SLA" means signed by the deadline the clock set. The report is kept (figures,
CSV, PDF) so a download months later shows what was sent."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from credentialing.eligibility import image_modalities
from facilities.models import Facility, PriorityClass
from qa.metrics import minutes, percentile, quarter_bounds
from qa.models import QuarterlyReport
from qa.selectors import discrepancy_rates
from radiology.pdf import html_to_pdf
from reports.models import Report, ReportStatus


@dataclass
class TatRow:
    priority: str
    label: str
    target_minutes: int | None
    reads: int = 0
    p50: float | None = None
    p90: float | None = None
    within_sla: int = 0

    @property
    def compliance(self) -> float | None:
        return self.within_sla / self.reads if self.reads else None


@dataclass
class QuarterFigures:
    facility: str
    facility_name: str
    year: int
    quarter: int
    start: str
    end: str
    volume_by_modality: dict[str, int] = field(default_factory=dict)
    tat: list[TatRow] = field(default_factory=list)
    discrepancies: list[dict] = field(default_factory=list)
    critical_results: int = 0
    critical_within_target: int = 0
    critical_target_minutes: int = 60
    # each algorithm measured (qa.ai_metrics): dicts, so the stored figures stay JSON
    algorithms: list[dict] = field(default_factory=list)

    @property
    def critical_compliance(self) -> float | None:
        return self.critical_within_target / self.critical_results if self.critical_results else None

    @property
    def reads(self) -> int:
        return sum(self.volume_by_modality.values())

    @property
    def sla_compliance(self) -> float | None:
        reads = sum(r.reads for r in self.tat)
        return sum(r.within_sla for r in self.tat) / reads if reads else None


def final_reads(*, start: datetime, end: datetime, facility_ids: list[int] | None = None):
    reads = Report.objects.filter(status=ReportStatus.FINAL, signed_at__gte=start, signed_at__lt=end)
    if facility_ids is not None:
        reads = reads.filter(study__facility_id__in=facility_ids)
    return reads.select_related("study__assignment", "study__facility").prefetch_related("communications")


def volume_by_modality(reads) -> dict[str, int]:
    volume: dict[str, int] = {}
    for report in reads:
        modality = (image_modalities(report.study.modalities) or ["other"])[0]
        volume[modality] = volume.get(modality, 0) + 1
    return dict(sorted(volume.items()))


def tat_rows(reads, facility: Facility | None = None) -> list[TatRow]:
    """Per priority class: reads, p50/p90 minutes and how many were signed by their deadline. With a
    facility, its contract targets; across facilities each read is held to its own facility's."""
    rows = {
        p.value: TatRow(p.value, p.label, int(minutes(facility.sla_target(p))) if facility else None)
        for p in PriorityClass
    }
    durations: dict[str, list[float]] = {p.value: [] for p in PriorityClass}
    for report in reads:
        assignment = getattr(report.study, "assignment", None)
        if assignment is None or assignment.clock_started_at is None:
            continue
        row = rows[report.study.priority]
        row.reads += 1
        durations[row.priority].append(minutes(report.signed_at - assignment.clock_started_at))
        if assignment.sla_deadline and report.signed_at <= assignment.sla_deadline:
            row.within_sla += 1
    for priority, row in rows.items():
        row.p50, row.p90 = percentile(durations[priority], 0.5), percentile(durations[priority], 0.9)
    return list(rows.values())


def critical_communication(reads) -> tuple[int, int]:
    """(critical results, communicated within their facility's target): the first communication's
    time against ``critical_marked_at + critical_result_minutes`` (ACR practice parameter; The Joint
    Commission NPSG.02.03.01 asks each organisation to set and measure such a target)."""
    critical = [r for r in reads if r.is_critical and r.critical_marked_at]
    within = 0
    for report in critical:
        target = timedelta(minutes=report.study.facility.critical_result_minutes)
        first = min((c.communicated_at for c in report.communications.all()), default=None)
        if first is not None and first <= report.critical_marked_at + target:
            within += 1
    return len(critical), within


def quarter_figures(facility: Facility, year: int, quarter: int) -> QuarterFigures:
    start, end = quarter_bounds(year, quarter, ZoneInfo(facility.timezone))
    reads = list(
        final_reads(start=start, end=end, facility_ids=[facility.pk]).prefetch_related("communications")
    )
    critical, within = critical_communication(reads)
    return QuarterFigures(
        facility=facility.code,
        facility_name=facility.name,
        year=year,
        quarter=quarter,
        start=start.isoformat(),
        end=end.isoformat(),
        volume_by_modality=volume_by_modality(reads),
        tat=tat_rows(reads, facility),
        discrepancies=[
            {
                "reader": r.key,
                "reviewed": r.reviewed,
                "significant": r.significant,
                "rate": r.rate,
                "ci": r.interval,
            }
            for r in discrepancy_rates(by="reader", start=start, end=end, facility_ids=[facility.pk])
        ],
        critical_results=critical,
        critical_within_target=within,
        critical_target_minutes=facility.critical_result_minutes,
        algorithms=algorithm_figures(start=start, end=end, facility_ids=[facility.pk]),
    )


def algorithm_figures(*, start: datetime, end: datetime, facility_ids: list[int] | None) -> list[dict]:
    from qa.ai_metrics import algorithm_performance

    return [
        {
            "facility": r.facility,
            "algorithm": r.algorithm,
            "finding": r.finding,
            "positives": r.positives,
            "assessed": r.assessed,
            "confirmed": r.confirmed,
            "ppv": r.ppv,
            "ppv_ci": r.ppv_interval,
            "negatives": r.negatives,
            "misses": r.misses,
            "miss_ci": r.miss_interval,
            "reranked_claim_minutes": r.reranked_median,
            "other_claim_minutes": r.other_median,
        }
        for r in algorithm_performance(start=start, end=end, facility_ids=facility_ids)
    ]


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


AI_CSV_HEADER = [
    "section",
    "algorithm",
    "finding",
    "positives",
    "assessed",
    "confirmed",
    "ppv_pct",
    "ci95_low_pct",
    "ci95_high_pct",
    "negatives",
    "misses",
    "reranked_claim_min",
    "other_claim_min",
]


def quarter_csv(figures: QuarterFigures) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["facility", figures.facility, "quarter", f"{figures.year}-Q{figures.quarter}"])
    w.writerow([])
    w.writerow(["section", "key", "reads", "p50_minutes", "p90_minutes", "target_minutes", "within_sla_pct"])
    for modality, count in figures.volume_by_modality.items():
        w.writerow(["volume", modality, count, "", "", "", ""])
    for r in figures.tat:
        w.writerow(
            ["tat", r.priority, r.reads, _num(r.p50), _num(r.p90), r.target_minutes, _pct(r.compliance)]
        )
    w.writerow(["sla", "all", sum(r.reads for r in figures.tat), "", "", "", _pct(figures.sla_compliance)])
    w.writerow(
        [
            "critical_results",
            "communicated_within_target",
            figures.critical_results,
            "",
            "",
            "",
            _pct(figures.critical_compliance),
        ]
    )
    w.writerow([])
    w.writerow(["section", "reader", "reviewed", "significant", "rate_pct", "ci95_low_pct", "ci95_high_pct"])
    for d in figures.discrepancies:
        w.writerow(
            [
                "discrepancy",
                d["reader"],
                d["reviewed"],
                d["significant"],
                _pct(d["rate"]),
                _pct(d["ci"][0]),
                _pct(d["ci"][1]),
            ]
        )
    w.writerow([])
    w.writerow(AI_CSV_HEADER)
    for a in figures.algorithms:
        ppv_low, ppv_high = a["ppv_ci"]
        w.writerow(
            [
                "ai",
                a["algorithm"],
                a["finding"],
                a["positives"],
                a["assessed"],
                a["confirmed"],
                _pct(a["ppv"]),
                _pct(ppv_low),
                _pct(ppv_high),
                a["negatives"],
                a["misses"],
                _num(a["reranked_claim_minutes"]),
                _num(a["other_claim_minutes"]),
            ]
        )
    return out.getvalue()


def quarter_pdf(figures: QuarterFigures, generated_at: datetime) -> bytes:
    html = render_to_string(
        "qa/quarterly.html",
        {"f": figures, "generated_at": generated_at, "critical_minutes": figures.critical_target_minutes},
    )
    return html_to_pdf(html)


@transaction.atomic
def quarterly_report_generate(*, facility: Facility, year: int, quarter: int) -> QuarterlyReport:
    """Compute, render and keep the report (again, if asked again: the latest figures win)."""
    figures = quarter_figures(facility, year, quarter)
    now = timezone.now()
    data = asdict(figures) | {
        "reads": figures.reads,
        "sla_compliance": figures.sla_compliance,
        "critical_compliance": figures.critical_compliance,
    }
    report, _ = QuarterlyReport.objects.update_or_create(
        facility=facility,
        year=year,
        quarter=quarter,
        defaults={
            "generated_at": now,
            "figures": data,
            "csv": quarter_csv(figures),
            "pdf": quarter_pdf(figures, now),
        },
    )
    return report
