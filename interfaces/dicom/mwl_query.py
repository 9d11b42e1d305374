"""The reads behind ReadRoom's Modality Worklist SCP (PS3.4 Annex K, docs/priors.md "Modality
Worklist"): one facility's open orders, matched with the Q/R SCP's matchers (``qr_query`` and the QIDO-RS
ones it uses), returned as plain values — the DIMSE handler (``interfaces.dicom.mwl``) never touches the
ORM. Every answer is an audited search, as for C-FIND.

* Open: an order SCHEDULED or IN_PROGRESS (SPS status SCHEDULED / STARTED) for which no image is
  stored yet. A cancelled, discontinued or completed order is gone; so is one whose study arrived (the
  step was performed: offering it again invites a second acquisition under the same accession).
* The scope is the calling AE's facility, always; the facility is never read from the identifier.
* ReadRoom does not schedule stations: each open order is on the worklist of every AE of the
  facility, answered with the calling AE as ScheduledStationAETitle, and a ScheduledStationAETitle
  key matches when it names (or its wildcard covers) the calling AE.
* The start date/time is the order's scheduled time (TQ1-7 / ORC-7.4), else when it was ordered,
  else when it arrived; in the facility's local time, as a scanner shows it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce

from accounts.audit import record_phi_search
from facilities.models import Facility
from imaging.models import Order, OrderStatus, Study
from interfaces.dicom.qr_query import _patient_filter
from interfaces.dicom.web_query import (
    QueryError,
    _dicom_date,
    _time_range,
    _wildcard_regex,
    text_q,
    uid_list_q,
)

OPEN = {OrderStatus.SCHEDULED: "SCHEDULED", OrderStatus.IN_PROGRESS: "STARTED"}
TOP_KEYS = {"AccessionNumber", "RequestedProcedureID", "StudyInstanceUID"}
PATIENT_KEYS = {"PatientID", "PatientName", "IssuerOfPatientID", "PatientBirthDate", "PatientSex"}
# MWL's Requested Procedure Priority (0040,1003) for ReadRoom's priority classes
PRIORITY = {"STROKE": "STAT", "TRAUMA": "STAT", "STAT": "STAT", "ASAP": "HIGH", "ROUTINE": "ROUTINE"}
MWL_UID_NAMESPACE = uuid.UUID("5b0f8a34-5a57-4d3e-9b43-6f1f0e6c2a17")  # ReadRoom's, for MWL UIDs only


@dataclass(frozen=True)
class WorklistQuery:
    matches: tuple[tuple[str, str], ...]  # top-level keys (patient, accession, requested procedure)
    step: tuple[tuple[str, str], ...]  # keys of the Scheduled Procedure Step Sequence's item


def mwl_find(facility: Facility, query: WorklistQuery, *, calling_ae_title: str) -> Iterator[dict]:
    """The matching open orders as {keyword: value}; the step's values under "ScheduledProcedureStep"."""
    step = dict(query.step)
    station = step.pop("ScheduledStationAETitle", "")
    if station and not re.fullmatch(_wildcard_regex(station), calling_ae_title):
        orders: list[Order] = []  # another station's worklist: ReadRoom schedules none
    else:
        orders = list(_matching(facility, query.matches, step))
    keys = {k: [v] for k, v in (*query.matches, *query.step)} | {"calling AE": [calling_ae_title]}
    record_phi_search(Order, via="DICOM MWL C-FIND", query=keys, returned=orders, total=len(orders))
    for order in orders:
        yield _values(order, facility, calling_ae_title)


def _matching(facility: Facility, matches, step: dict[str, str]) -> list[Order]:
    queryset: QuerySet = (
        Order.objects.filter(facility=facility, status__in=OPEN)
        .exclude(Exists(Study.objects.filter(order=OuterRef("pk"), number_of_instances__gt=0)))
        .annotate(_sps_at=Coalesce("scheduled_at", "ordered_at", "created_at"))
        .select_related("patient")
    )
    for keyword, value in matches:
        match keyword:
            case "AccessionNumber":
                queryset = queryset.filter(text_q("accession_number", value))
            case "RequestedProcedureID":
                queryset = queryset.filter(text_q("requested_procedure_id", value))
            case "StudyInstanceUID":
                queryset = queryset.filter(uid_list_q("study_instance_uid", value))
    patient_keys = tuple((k, v) for k, v in matches if k in PATIENT_KEYS)
    queryset = _patient_filter(queryset, patient_keys, prefix="patient__")
    if modality := step.get("Modality"):
        queryset = queryset.filter(text_q("modality", modality))
    if step_id := step.get("ScheduledProcedureStepID"):
        queryset = queryset.filter(text_q("scheduled_procedure_step_id", step_id))
    if status := step.get("ScheduledProcedureStepStatus"):
        wanted = [ours for ours, theirs in OPEN.items() if theirs in status.upper().split("\\")]
        queryset = queryset.filter(status__in=wanted)
    if dates := step.get("ScheduledProcedureStepStartDate"):
        queryset = queryset.filter(_local_date_q(facility, dates))
    orders = list(queryset.order_by("_sps_at", "pk"))
    if times := step.get("ScheduledProcedureStepStartTime"):
        start, end = _time_range(times)
        orders = [
            o
            for o in orders
            if (local := o._sps_at.astimezone(facility.zone).time())
            and (start is None or local >= start)
            and (end is None or local <= end)
        ]
    return orders


def _local_date_q(facility: Facility, value: str) -> Q:
    """Range matching (PS3.4 C.2.2.2.5) on the step's local date at this facility."""
    start_text, dash, end_text = value.partition("-")
    start = _dicom_date(start_text, "ScheduledProcedureStepStartDate")
    end = _dicom_date(end_text if dash else start_text, "ScheduledProcedureStepStartDate")
    q = Q()
    if start is not None:
        q &= Q(_sps_at__gte=start.replace(tzinfo=facility.zone))
    if end is not None:
        q &= Q(_sps_at__lt=(end + timedelta(days=1)).replace(tzinfo=facility.zone))
    return q


def _values(order: Order, facility: Facility, calling_ae_title: str) -> dict:
    patient = order.patient
    local: datetime = order._sps_at.astimezone(facility.zone)
    name = "^".join([patient.family_name, patient.given_name, patient.middle_name]).rstrip("^")
    xcn = order.ordering_provider_xcn or {}
    referring = "^".join([xcn.get("family", ""), xcn.get("given", ""), xcn.get("middle", "")]).rstrip("^")
    return {
        "PatientID": patient.mrn,
        "PatientName": name,
        "IssuerOfPatientID": patient.assigning_authority,
        "PatientBirthDate": patient.birth_date.strftime("%Y%m%d") if patient.birth_date else "",
        "PatientSex": patient.sex if patient.sex in {"F", "M", "O"} else "",
        "AccessionNumber": order.accession_number,
        # Type 1 in the answer: the order's own UID (IPC-3), else one derived from the accession,
        # the same at every query, so every scanner that picks the order writes the same study
        "StudyInstanceUID": order.study_instance_uid or _derived_uid(facility, order.accession_number),
        "RequestedProcedureID": order.requested_procedure_id or order.accession_number,
        "RequestedProcedureDescription": order.procedure_text[:64],
        "RequestedProcedureCode": (
            order.procedure_code,
            order.procedure_coding_system or "C4",
            order.procedure_text,
        ),
        "RequestedProcedurePriority": PRIORITY.get(order.priority, "ROUTINE"),
        "ReferringPhysicianName": referring,
        "RequestingPhysician": referring,
        "ReasonForTheRequestedProcedure": order.reason[:64],
        "AdmissionID": order.visit_number,
        "CurrentPatientLocation": order.patient_location[:64],
        "ScheduledProcedureStep": {
            "Modality": order.modality,
            "ScheduledStationAETitle": calling_ae_title,
            "ScheduledProcedureStepStartDate": local.strftime("%Y%m%d"),
            "ScheduledProcedureStepStartTime": local.strftime("%H%M%S"),
            "ScheduledProcedureStepDescription": order.procedure_text[:64],
            "ScheduledProcedureStepID": order.scheduled_procedure_step_id or order.accession_number,
            "ScheduledProcedureStepStatus": OPEN[order.status],
            "ScheduledPerformingPhysicianName": "",
        },
    }


def _derived_uid(facility: Facility, accession: str) -> str:
    """A UUID-derived UID (PS3.5 B.2, ``2.25.``) named by the facility and the accession: a
    name-based UUID, so every query for the order answers the same one."""
    return f"2.25.{uuid.uuid5(MWL_UID_NAMESPACE, f'{facility.code}/{accession}').int}"


__all__ = ["QueryError", "WorklistQuery", "mwl_find"]
