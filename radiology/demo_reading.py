"""Demo reading data, so every reading page has something to show on a fresh ``make demo``: each
facility's reporting settings and ORU endpoint (the EMR simulator), facility report templates for the
simulator's procedures that ReadRoom ships none for, signed final reads of earlier studies, peer
review cases in each state, and a quarterly QA report.

Everything goes through the services a person would use — the order through the HL7 apply path,
two images through the DICOM receive path, routing, claim, editor, signing with the demo password —
so charges, the ORU outbox, TAT milestones and the audit log are real. Idempotent: an earlier read is
keyed by its accession, a review by its report, the quarterly report by facility and quarter."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone
from pydicom import dcmwrite

from accounts.models import User
from facilities.models import Facility
from imaging.models import Order, Study
from imaging.services import order_message_apply, studies_complete_quiet
from interfaces.dicom.receive import dicom_instance_receive
from interfaces.emr_simulator import EMR_SIMULATOR_HOST
from interfaces.hl7.parse import parse
from interfaces.simulator import PROCEDURES, UID_ROOT, SimulatedExam, order_message, series_datasets
from qa.metrics import previous_quarter
from qa.models import PeerReview, QuarterlyReport, ReviewStatus
from qa.quarterly import quarterly_report_generate
from qa.services import adjudication_decide, peer_review_refer, peer_review_score
from reports.models import Report, ReportStatus, ReportTemplate
from reports.services import report_draft_save, report_sign, report_start
from reports.template_services import template_create, template_version_add
from worklist.models import Shift
from worklist.services import study_claim, study_route

# Every demo facility is in Chicago time; the earlier reads are dated there.
DEMO_ZONE = ZoneInfo("America/Chicago")

# Images are complete after this much quiet: the simulator sends a series in one association, so the
# demo need not wait the production default (90 s) before a study reaches the worklist.
DEMO_QUIET_SECONDS = 15

# code: (rate per final read, accepts preliminary reads, critical result deadline in minutes)
READING_SETTINGS = {
    "CHI-L1": (Decimal("42.00"), True, 30),  # the trauma centre takes wet reads overnight
    "IL-PRAIRIE": (Decimal("55.00"), False, 60),
    "WI-LAKEVIEW": (Decimal("38.50"), False, 60),
}
TEMPLATE_OWNERS = {"CHI-L1": "admin.chicago", "IL-PRAIRIE": "ops", "WI-LAKEVIEW": "admin.wisconsin"}


def _text(key: str, label: str, default: str = "", *, required: bool = False) -> dict:
    return {"key": key, "label": label, "kind": "text", "default": default, "required": required}


def _content(technique: str, findings: list[dict]) -> dict:
    return {
        "sections": [
            {
                "key": "history",
                "title": "Clinical history",
                "fields": [
                    _text("history", "Clinical history", "{{patient_age}} {{patient_sex}}. {{reason}}")
                ],
            },
            {
                "key": "technique",
                "title": "Technique",
                "fields": [_text("technique", "Technique", technique)],
            },
            {
                "key": "comparison",
                "title": "Comparison",
                "fields": [_text("comparison", "Comparison", "{{comparison}}")],
            },
            {"key": "findings", "title": "Findings", "fields": findings},
            {
                "key": "impression",
                "title": "Impression",
                "fields": [_text("impression", "Impression", required=True)],
            },
        ]
    }


# The simulator's procedures without a shipped template: name, code, modality, body part, content.
FACILITY_TEMPLATES = (
    (
        "CT chest with contrast",
        "71260",
        "CT",
        "CHEST",
        _content(
            "Axial CT images of the chest after intravenous {{contrast}}, with multiplanar reformations.",
            [
                _text("lungs", "Lungs and airways", "No consolidation, nodule or mass."),
                _text("pleura", "Pleura", "No effusion or pneumothorax."),
                _text("mediastinum", "Heart and mediastinum", "Normal heart size. No lymphadenopathy."),
                _text("pe", "Pulmonary arteries", "No central pulmonary embolism."),
                _text("bones", "Bones and soft tissues", "No aggressive osseous lesion."),
            ],
        ),
    ),
    (
        "MRI brain without contrast",
        "70551",
        "MR",
        "HEAD",
        _content(
            "Multiplanar multisequence MR images of the brain without contrast, including DWI and SWI.",
            [
                _text("diffusion", "Diffusion", "No restricted diffusion."),
                _text("parenchyma", "Brain parenchyma", "No mass, hemorrhage or abnormal signal."),
                _text("ventricles", "Ventricles and extra-axial spaces", "Normal."),
                _text("vessels", "Flow voids", "Normal major intracranial flow voids."),
            ],
        ),
    ),
    (
        "Chest radiograph, 1 view",
        "71045",
        "CR",
        "CHEST",
        _content(
            "Single frontal view of the chest.",
            [
                _text("lines", "Lines and tubes", "None."),
                _text("lungs", "Lungs", "Clear."),
                _text("pleura", "Pleura", "No effusion or pneumothorax."),
                _text("heart", "Heart and mediastinum", "Normal cardiomediastinal silhouette."),
            ],
        ),
    ),
    (
        "Knee radiographs, 2 views",
        "73560",
        "CR",
        "KNEE",
        _content(
            "AP and lateral views of the knee.",
            [
                _text("fracture", "Fracture or dislocation", "None."),
                _text("joint", "Joint spaces", "Preserved."),
                _text("effusion", "Effusion", "None."),
            ],
        ),
    ),
)


@dataclass(frozen=True)
class EarlierRead:
    """A study read before today, signed final by ``reader`` ``days_ago`` days ago at ``hour`` local
    time — or, with ``days_ago`` None, on day ``quarter_day`` of the previous quarter, so that quarter's
    QA report has figures."""

    accession: str
    facility: str
    reader: str
    procedure_code: str
    days_ago: int | None
    hour: int
    patient: tuple[str, str, str, str]  # family, given, birth date YYYYMMDD, sex
    reason: str
    values: dict[str, str]
    quarter_day: int = 0


EARLIER_READS = (
    EarlierRead(
        "DEMO-R01",
        "CHI-L1",
        "dr.neuro",
        "70450",
        None,
        10,
        ("NOVAK", "MARIA", "19480312", "F"),
        "FALL",
        {
            "parenchyma": "Small chronic lacunar infarct in the right corona radiata.",
            "impression": "No acute intracranial abnormality.",
        },
        quarter_day=27,
    ),
    EarlierRead(
        "DEMO-R02",
        "CHI-L1",
        "dr.nighthawk",
        "70450",
        None,
        14,
        ("ORTIZ", "JAMES", "19610704", "M"),
        "HEADACHE",
        {"impression": "No acute intracranial abnormality."},
        quarter_day=34,
    ),
    EarlierRead(
        "DEMO-R03",
        "CHI-L1",
        "dr.nighthawk",
        "70450",
        6,
        11,
        ("NGUYEN", "LINH", "19550121", "F"),
        "FALL ON ANTICOAGULATION",
        {"impression": "No acute intracranial hemorrhage."},
    ),
    EarlierRead(
        "DEMO-R04",
        "CHI-L1",
        "dr.neuro",
        "70450",
        3,
        9,
        ("KOWALSKI", "PETER", "19400930", "M"),
        "CONFUSION",
        {"impression": "Chronic small vessel ischemic change. No acute abnormality."},
    ),
    EarlierRead(
        "DEMO-R05",
        "CHI-L1",
        "dr.body",
        "74177",
        2,
        13,
        ("JOHNSON", "ANNA", "19870215", "F"),
        "ABDOMINAL PAIN",
        {"impression": "Normal appendix. No acute abdominal or pelvic abnormality."},
    ),
    EarlierRead(
        "DEMO-R06",
        "WI-LAKEVIEW",
        "dr.msk",
        "73721",
        1,
        8,
        ("HERRERA", "MIGUEL", "19990505", "M"),
        "KNEE PAIN AFTER TWIST",
        {
            "side": "Right",
            "medial_meniscus": "Horizontal tear of the posterior horn.",
            "impression": "Horizontal tear of the posterior horn of the medial meniscus.",
        },
    ),
)

# accession: (reviewer, score, comment, director's final score and feedback) — None where the case stops
PEER_REVIEWS = {
    "DEMO-R01": (
        "dr.nighthawk",
        "3b",
        "Subtle hyperdense left MCA sign on the axial images was not mentioned.",
        (
            "2b",
            "Agreed it was subtle; please look at the MCA segments on every code-stroke head CT and "
            "mention a hyperdense vessel or its absence.",
        ),
    ),
    "DEMO-R02": ("dr.neuro", "1", "", None),
    "DEMO-R03": ("dr.neuro", "3a", "Thin left subdural collection along the tentorium not reported.", None),
    "DEMO-R04": ("dr.nighthawk", None, "", None),  # assigned, not yet scored
}


def reading_demo_load(*, today: date | None = None) -> int:
    """Load it all; returns how many earlier reads were signed now (0 when they existed already)."""
    facilities = {f.code: f for f in Facility.objects.filter(code__in=READING_SETTINGS)}
    _demo_reading_settings(facilities)
    demo_ai_rules_load(facilities.values())
    _demo_report_templates(facilities)
    signed = _demo_reports(facilities, today or timezone.localdate(timezone=DEMO_ZONE))
    _demo_peer_reviews()
    _demo_quarterly_report(facilities["CHI-L1"])
    return signed


def _demo_reading_settings(facilities: dict[str, Facility]) -> None:
    """Rates, wet reads, critical-result deadlines, a short quiet period, the ORU endpoint."""
    for code, (rate, preliminary, critical_minutes) in READING_SETTINGS.items():
        facility = facilities[code]
        wanted = {
            "read_rate": rate,
            "accepts_preliminary": preliminary,
            "critical_result_minutes": critical_minutes,
            "study_quiet_seconds": DEMO_QUIET_SECONDS,
            "hl7_outbound_host": EMR_SIMULATOR_HOST,
            "hl7_outbound_port": settings.READROOM_EMR_SIM_PORT,
        }
        changed = [name for name, value in wanted.items() if getattr(facility, name) != value]
        if changed:  # a save (audited), and none when reloading changes nothing
            for name in changed:
                setattr(facility, name, wanted[name])
            facility.save(update_fields=changed)


# What the simulator's AI node's findings do at every demo facility (docs/ai.md), so `make demo` shows
# the badge and the re-ranking: ICH → STAT first, LVO on a CTA → STROKE, PE → first within its class.
DEMO_AI_RULES = (
    ("ICH positive → STAT, first", ["274100004", "RID4700"], "", "STAT"),
    ("LVO positive on a CTA → STROKE", ["20059004"], r"\bCTA\b|ANGIO", "STROKE"),
    ("PE positive → first within its class", ["59282003"], "", ""),
)


def demo_ai_rules_load(facilities) -> None:
    from worklist.models import AiTriageRule

    for facility in facilities:
        for name, codes, pattern, raise_to in DEMO_AI_RULES:
            AiTriageRule.objects.get_or_create(
                facility=facility, name=name,
                defaults={"finding_codes": codes, "procedure_pattern": pattern, "raise_to": raise_to},
            )  # fmt: skip


def _demo_report_templates(facilities: dict[str, Facility]) -> None:
    owners = {u.username: u for u in User.objects.filter(username__in=TEMPLATE_OWNERS.values())}
    for code, facility in facilities.items():
        owner = owners[TEMPLATE_OWNERS[code]]
        for name, procedure_code, modality, body_part, content in FACILITY_TEMPLATES:
            if ReportTemplate.objects.filter(facility=facility, name=name).exists():
                continue
            template = template_create(
                facility=facility,
                name=name,
                content=content,
                user=owner,
                procedure_codes=[procedure_code],
                modality=modality,
                body_part=body_part,
            )
            if code == "CHI-L1" and procedure_code == "71260":
                # a second version, so the version list and the field-by-field comparison show something
                content = {**content, "sections": [dict(s) for s in content["sections"]]}
                content["sections"][3] = {
                    **content["sections"][3],
                    "fields": [
                        *content["sections"][3]["fields"],
                        _text("incidental", "Incidental findings", "None requiring follow-up."),
                    ],
                }
                template_version_add(
                    template=template, content=content, user=owner, change_note="Incidental findings line"
                )


# From the claim to the signature an earlier read takes 17 minutes (_earlier_read_sign).
READ_TAKES = timedelta(minutes=20)


def _read_time(read: EarlierRead, today: date, now: datetime) -> datetime:
    """When the read was made. A recent read that would fall in last month is moved into this month
    (its hour on the 1st, or earlier today when that hour is still to come), so a fresh demo's
    charges CSV of the current month has rows; no read is dated after ``now``."""
    if read.days_ago is None:
        year, quarter = previous_quarter(today)
        day = date(year, 3 * (quarter - 1) + 1, 1) + timedelta(days=read.quarter_day)
        return datetime.combine(day, time(read.hour), tzinfo=DEMO_ZONE)
    at = datetime.combine(today - timedelta(days=read.days_ago), time(read.hour), tzinfo=DEMO_ZONE)
    month_start = datetime.combine(today.replace(day=1), time.min, tzinfo=DEMO_ZONE)
    if at >= month_start:
        return at
    moved = min(datetime.combine(month_start.date(), time(read.hour), tzinfo=DEMO_ZONE), now - READ_TAKES)
    return moved if moved >= month_start else at  # the month is minutes old: leave it in the last


def _demo_reports(facilities: dict[str, Facility], today: date) -> int:
    readers = {u.username: u for u in User.objects.filter(username__in={r.reader for r in EARLIER_READS})}
    now = timezone.now()
    signed = 0
    for number, read in enumerate(EARLIER_READS, 1):
        facility = facilities[read.facility]
        if Order.objects.filter(facility=facility, accession_number=read.accession).exists():
            continue
        at = _read_time(read, today, now)
        study = _earlier_study(facility, read, number, at)
        _earlier_read_sign(study, readers[read.reader], read, at + timedelta(minutes=3))
        signed += 1
    return signed


def _earlier_study(facility: Facility, read: EarlierRead, number: int, at: datetime) -> Study:
    """The order through the HL7 apply path and two images through the DICOM receive path, as they
    arrived then; complete and routed as the sweep would have done it a minute later."""
    family, given, birth_date, sex = read.patient
    exam = SimulatedExam(
        facility_code=facility.code,
        mrn=f"DEMO{number:04d}",
        family_name=family,
        given_name=given,
        birth_date=birth_date,
        sex=sex,
        accession=read.accession,
        procedure=next(p for p in PROCEDURES if p.code == read.procedure_code),
        priority="S",
        reason=read.reason,
        patient_class="E",
        study_uid=f"{UID_ROOT}9.{number}",
    )
    local = at.replace(tzinfo=None)
    sender = facility.hl7_senders.order_by("id").first()
    raw = order_message(
        exam, (sender.sending_application, sender.sending_facility), read.accession, now=local
    )
    order_message_apply(facility=facility, message=parse(raw).content)
    for ds in series_datasets(exam, slices=2, size=128, now=local):
        part10 = io.BytesIO()
        dcmwrite(part10, ds, enforce_file_format=True)
        dicom_instance_receive(facility=facility, part10=part10.getvalue(), received_at=at)
    studies_complete_quiet(now=at + timedelta(seconds=facility.study_quiet_seconds))
    study = Study.objects.get(facility=facility, study_instance_uid=exam.study_uid)
    study_route(study_id=study.pk, at=at + timedelta(minutes=1))
    return study


def _earlier_read_sign(study: Study, reader: User, read: EarlierRead, at: datetime) -> Report:
    # That day's rota: the reader was on the day shift (the eligibility engine asks at each step) —
    # or, for a read moved to early on the 1st (_read_time), on a shift that began an hour before it.
    local_day = at.astimezone(DEMO_ZONE).date()
    start = datetime.combine(local_day, time(7), tzinfo=DEMO_ZONE)
    if not start <= at <= start + timedelta(hours=12) - READ_TAKES:
        start = at - timedelta(hours=1)
    Shift.objects.get_or_create(
        radiologist=reader, starts_at=start, defaults={"ends_at": start + timedelta(hours=12)}
    )
    study_claim(study_id=study.pk, user=reader, at=at)
    report = report_start(study_id=study.pk, user=reader, at=at + timedelta(minutes=1))
    report_draft_save(report_id=report.pk, user=reader, values=read.values, at=at + timedelta(minutes=9))
    from radiology.demo import DEMO_PASSWORD  # radiology.demo calls this module

    return report_sign(
        report_id=report.pk, user=reader, secret=DEMO_PASSWORD, at=at + timedelta(minutes=14), final=True
    )


def _demo_peer_reviews() -> None:
    users = {
        u.username: u for u in User.objects.filter(username__in=["director", "dr.neuro", "dr.nighthawk"])
    }
    for accession, (reviewer, score, comment, decision) in PEER_REVIEWS.items():
        report = Report.objects.filter(study__accession_number=accession, status=ReportStatus.FINAL).first()
        if report is None or PeerReview.objects.filter(report=report).exists():
            continue
        at = min(report.signed_at + timedelta(days=1), timezone.now())  # never in the future
        review = peer_review_refer(
            report_id=report.pk, by=users["director"], reason="Demo: quality review of this read.", at=at
        )
        if review.reviewer_id != users[reviewer].pk or review.status != ReviewStatus.ASSIGNED:
            continue  # nobody else eligible to review it (then the page shows it as unassignable)
        if score is None:
            continue
        peer_review_score(review_id=review.pk, user=users[reviewer], score=score, comment=comment, at=at)
        if decision is not None:
            final_score, feedback = decision
            adjudication_decide(
                review_id=review.pk,
                director=users["director"],
                final_score=final_score,
                feedback=feedback,
                at=at + timedelta(days=1),
            )


def _demo_quarterly_report(facility: Facility) -> None:
    year, quarter = previous_quarter(timezone.localdate(timezone=facility.zone))
    if not QuarterlyReport.objects.filter(facility=facility, year=year, quarter=quarter).exists():
        quarterly_report_generate(facility=facility, year=year, quarter=quarter)
