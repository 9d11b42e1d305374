"""The values of a template's merge fields (``reports.schema.MERGE_FIELDS``) for one study, from the
order, the patient and the DICOM header — filled once, when the report is started; the radiologist
may then change the text like any other."""

from __future__ import annotations

import logging
from datetime import date, datetime
from io import BytesIO

from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from imaging.models import Instance, Sex, Study, StudyStatus

logger = logging.getLogger(__name__)

_SEX_WORDS = {Sex.FEMALE: "female", Sex.MALE: "male", Sex.OTHER: "other"}
COMPARISON_LIMIT = 5


# Where the exam time is looked for, first to last (relative to the study): in Python by
# exam_instant, in SQL by exam_instant_expression.
EXAM_INSTANT_FIELDS = (
    "study_datetime",
    "order__scheduled_at",
    "order__ordered_at",
    "first_received_at",
    "created_at",
)


def exam_instant(study: Study) -> datetime:
    """When the exam took place: the DICOM study date/time, else the order's schedule or order time,
    else when the images arrived."""
    for name in EXAM_INSTANT_FIELDS:
        value = study
        for part in name.split("__"):
            value = getattr(value, part) if value is not None else None
        if value:
            return value
    return timezone.now()


def exam_instant_expression(study_path: str = "") -> Coalesce:
    """``exam_instant`` in SQL, for filtering by exam time (``study_path``: e.g. ``"study__"``)."""
    return Coalesce(*(F(f"{study_path}{name}") for name in EXAM_INSTANT_FIELDS))


def exam_date(study: Study) -> date:
    return exam_instant(study).astimezone(study.facility.zone).date()


def age_phrase(birth_date: date | None, on: date) -> str:
    """ "67-year-old", or in months under two years ("8-month-old"), as reports say it."""
    if birth_date is None:
        return ""
    months = (on.year - birth_date.year) * 12 + on.month - birth_date.month - (on.day < birth_date.day)
    if months < 0:
        return ""
    return f"{months}-month-old" if months < 24 else f"{months // 12}-year-old"


def comparison_text(study: Study) -> str:
    """Earlier studies of the same patient at the same facility (accession and date), newest first."""
    if not study.patient_id:
        return "None."
    when = exam_instant(study)
    priors = (
        Study.objects.filter(facility_id=study.facility_id, patient_id=study.patient_id)
        .exclude(pk=study.pk)
        .exclude(status=StudyStatus.CANCELLED)
        .select_related("order")
        .order_by("-study_datetime", "-id")
    )
    lines = []
    for prior in priors:
        prior_when = exam_instant(prior)
        if prior_when >= when:
            continue
        what = (prior.order.procedure_text if prior.order_id else "") or prior.description or prior.modalities
        day = prior_when.astimezone(study.facility.zone).date().isoformat()
        lines.append(f"{what} ({prior.accession_number or 'no accession'}, {day})".strip())
        if len(lines) == COMPARISON_LIMIT:
            break
    return "; ".join(lines) + "." if lines else "None."


def contrast_text(study: Study) -> str:
    """Contrast/Bolus Agent (0018,0010) of the study's series, read from the first stored instance of
    each series (header only); "none" when no series names an agent."""
    import pydicom

    from imaging.storage import StorageError, encrypted_read

    agents: list[str] = []
    firsts = Instance.objects.filter(series__study=study).order_by("series_id", "instance_number", "id")
    seen: set[int] = set()
    for instance in firsts:
        if instance.series_id in seen:
            continue
        seen.add(instance.series_id)
        try:
            data = encrypted_read(instance.storage_path)
            header = pydicom.dcmread(
                BytesIO(data), stop_before_pixels=True, specific_tags=["ContrastBolusAgent"]
            )
        except (StorageError, OSError, ValueError, pydicom.errors.InvalidDicomError) as error:
            logger.warning("contrast: cannot read %s: %s", instance.sop_instance_uid, error)
            continue
        agent = str(header.get("ContrastBolusAgent", "") or "").strip()
        if agent and agent not in agents:
            agents.append(agent)
    return ", ".join(agents) if agents else "none"


def merge_context(study: Study) -> dict[str, str]:
    order = study.order if study.order_id else None
    patient = study.patient if study.patient_id else None
    day = exam_date(study)
    return {
        "patient_age": age_phrase(patient.birth_date, day) if patient else "",
        "patient_sex": _SEX_WORDS.get(patient.sex, "unknown") if patient else "unknown",
        "procedure": (order.procedure_text if order else "") or study.description,
        # every OBR-31, OBR-13 and the order's NTE notes, in full (imaging.models.Order.clinical_history)
        "reason": order.clinical_history if order else "",
        "ordering_provider": order.ordering_provider_name if order else "",
        "study_date": day.isoformat(),
        "comparison": comparison_text(study),
        "contrast": contrast_text(study),
        "facility": study.facility.name,
    }
