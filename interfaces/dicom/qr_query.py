"""The reads behind ReadRoom's Query/Retrieve SCP (C-FIND, C-MOVE, C-GET): one facility's index, matched
per PS3.4 C.2.2.2 with the QIDO-RS matchers (``web_query``), returned as plain values — the DIMSE handlers
(``interfaces.dicom.qr``) never touch the ORM. Every match is recorded in the audit log as a read.

The scope is the calling AE's facility, always: the facility is a parameter, never read from the query."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import CharField, F, Q, QuerySet, Value
from django.db.models.functions import Concat

from accounts.audit import record_phi_search
from facilities.models import Facility
from imaging.models import Instance, Patient, Series, Study
from interfaces.dicom.web_query import (
    INSTANCE,
    SERIES,
    STUDY,
    QidoRequest,
    QueryError,
    _dicom_date,
    person_name_regex,
    qido_filter,
    text_q,
)

PATIENT = "patient"
# Keys the QIDO matchers do not know, matched here (patient level and the patient's identity).
PATIENT_KEYS = {"PatientID", "PatientName", "IssuerOfPatientID", "PatientBirthDate", "PatientSex"}
QIDO_KEYS = {
    STUDY: {"StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber", "StudyDate",
            "ModalitiesInStudy", "StudyDescription"},
    SERIES: {"SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription"},
    INSTANCE: {"SOPInstanceUID", "SOPClassUID", "InstanceNumber"},
}  # fmt: skip
LEVELS = (PATIENT, STUDY, SERIES, INSTANCE)
MODEL = {PATIENT: Patient, STUDY: Study, SERIES: Series, INSTANCE: Instance}
STUDY_PATH = {STUDY: "", SERIES: "study__", INSTANCE: "series__study__"}


@dataclass(frozen=True)
class QrQuery:
    level: str  # patient | study | series | instance
    matches: tuple[tuple[str, str], ...]  # (keyword, value): universal matches already left out


@dataclass(frozen=True)
class StoredObject:
    """One instance to send in a C-MOVE / C-GET sub-operation."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    storage_path: str


def qr_find(facility: Facility, query: QrQuery, *, calling_ae_title: str) -> Iterator[dict[str, object]]:
    """The matches at ``query.level`` as {keyword: value} for every attribute we hold at that level
    and above (the handler keeps those the query asked for)."""
    rows = list(_matching(facility, query))
    _audit(query, rows, calling_ae_title, via="DICOM C-FIND")
    for row in rows:
        yield _values(query.level, row, facility)


def qr_retrieve(facility: Facility, query: QrQuery, *, calling_ae_title: str, via: str) -> list[StoredObject]:
    """The instances under the matches (C-MOVE / C-GET), in series and instance order."""
    rows = list(_matching(facility, query))
    _audit(query, rows, calling_ae_title, via=via)
    level_filter = {
        PATIENT: "series__study__patient__in",
        STUDY: "series__study__in",
        SERIES: "series__in",
        INSTANCE: "pk__in",
    }[query.level]
    instances = (
        Instance.objects.filter(**{level_filter: rows}, series__study__facility=facility)
        .order_by("series__study_id", "series__series_number", "series_id", "instance_number", "id")
        .values_list("sop_instance_uid", "sop_class_uid", "transfer_syntax_uid", "storage_path")
    )
    return [StoredObject(*row) for row in instances]


def _matching(facility: Facility, query: QrQuery) -> QuerySet:
    level = query.level
    if level == PATIENT:
        queryset = Patient.objects.filter(facility=facility, merged_into__isnull=True)
        queryset = _patient_filter(queryset, query.matches, prefix="")
        return queryset.order_by("pk")
    study = STUDY_PATH[level]
    queryset = MODEL[level].objects.filter(**{f"{study}facility": facility})
    known = set().union(*(QIDO_KEYS[lv] for lv in LEVELS[1 : LEVELS.index(level) + 1]))
    qido = tuple((k, v) for k, v in query.matches if k in known and k not in {"PatientName"})
    queryset = qido_filter(queryset, QidoRequest(level, qido))
    patient_keys = tuple((k, v) for k, v in query.matches if k in PATIENT_KEYS - {"PatientID"})
    queryset = _patient_filter(queryset, patient_keys, prefix=f"{study}patient__")
    if level == STUDY:
        queryset = queryset.select_related("patient")
    elif level == SERIES:
        queryset = queryset.select_related("study__patient")
    else:
        queryset = queryset.select_related("series__study__patient")
    return queryset.order_by("pk")


def _patient_filter(queryset: QuerySet, matches, *, prefix: str) -> QuerySet:
    for keyword, value in matches:
        match keyword:
            case "PatientID":
                queryset = queryset.filter(text_q(f"{prefix}mrn", value))
            case "IssuerOfPatientID":
                queryset = queryset.filter(text_q(f"{prefix}assigning_authority", value))
            case "PatientSex":
                queryset = queryset.filter(**{f"{prefix}sex": value})
            case "PatientBirthDate":
                queryset = queryset.filter(_date_range_q(f"{prefix}birth_date", value))
            case "PatientName":
                queryset = queryset.annotate(
                    _qr_pn=Concat(
                        F(f"{prefix}family_name"),
                        Value("^"),
                        F(f"{prefix}given_name"),
                        Value("^"),
                        F(f"{prefix}middle_name"),
                        output_field=CharField(),
                    )
                ).filter(_qr_pn__iregex=person_name_regex(value))
    return queryset


def _date_range_q(field: str, value: str) -> Q:
    """Range matching on a DA (``A-B``, ``-B``, ``A-``) or single value matching."""
    start_text, dash, end_text = value.partition("-")
    start = _dicom_date(start_text, "PatientBirthDate")
    end = _dicom_date(end_text if dash else start_text, "PatientBirthDate")
    q = Q()
    if start is not None:
        q &= Q(**{f"{field}__gte": start.date()})
    if end is not None:
        q &= Q(**{f"{field}__lt": (end + timedelta(days=1)).date()})
    return q


def _audit(query: QrQuery, rows: list, calling_ae_title: str, *, via: str) -> None:
    audited = [r if isinstance(r, Patient | Study) else _study_of(r) for r in rows]
    keys = {k: [v] for k, v in query.matches}
    keys["calling AE"] = [calling_ae_title]
    model = Patient if query.level == PATIENT else Study
    record_phi_search(model, via=via, query=keys, returned=list(dict.fromkeys(audited)), total=len(rows))


def _study_of(row) -> Study:
    return row.study if isinstance(row, Series) else row.series.study


def _values(level: str, row, facility: Facility) -> dict[str, object]:
    if level == PATIENT:
        return _patient_values(row) | {"NumberOfPatientRelatedStudies": row.studies.count()}
    series = row if level == SERIES else (row.series if level == INSTANCE else None)
    study = row if level == STUDY else series.study
    values = _patient_values(study.patient) | _study_values(study, facility)
    if series is not None:
        values |= {
            "SeriesInstanceUID": series.series_instance_uid,
            "Modality": series.modality,
            "SeriesNumber": series.series_number,
            "SeriesDescription": series.description,
            "BodyPartExamined": series.body_part,
            "NumberOfSeriesRelatedInstances": series.number_of_instances,
        }
    if level == INSTANCE:
        values |= {
            "SOPInstanceUID": row.sop_instance_uid,
            "SOPClassUID": row.sop_class_uid,
            "InstanceNumber": row.instance_number,
        }
    return values


def _patient_values(patient: Patient | None) -> dict[str, object]:
    if patient is None:
        return {"PatientID": "", "PatientName": "", "IssuerOfPatientID": ""}
    name = "^".join([patient.family_name, patient.given_name, patient.middle_name]).rstrip("^")
    return {
        "PatientID": patient.mrn,
        "PatientName": name,
        "IssuerOfPatientID": patient.assigning_authority,
        "PatientBirthDate": patient.birth_date.strftime("%Y%m%d") if patient.birth_date else "",
        "PatientSex": patient.sex if patient.sex in {"F", "M", "O"} else "",
    }


def _study_values(study: Study, facility: Facility) -> dict[str, object]:
    local = study.study_datetime.astimezone(facility.zone) if study.study_datetime else None
    return {
        "StudyInstanceUID": study.study_instance_uid,
        "StudyDate": local.strftime("%Y%m%d") if local else "",
        "StudyTime": local.strftime("%H%M%S") if local else "",
        "AccessionNumber": study.accession_number,
        "StudyDescription": study.description,
        "ModalitiesInStudy": study.modalities.split("\\") if study.modalities else [],
        "NumberOfStudyRelatedSeries": study.number_of_series,
        "NumberOfStudyRelatedInstances": study.number_of_instances,
        "StudyID": "",
        "ReferringPhysicianName": "",
    }


__all__ = ["LEVELS", "PATIENT", "QrQuery", "QueryError", "StoredObject", "qr_find", "qr_retrieve"]
