"""Writes for patients, orders and studies — what ingest applies once a message or image is
safely stored. Keyword-only, atomic; signals to routing go out after commit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from facilities.models import Facility, PriorityClass
from imaging.clinical import order_priority_class, stroke_detected
from imaging.facts import (
    DemographicsUpdate,
    InstanceHeader,
    OrderFacts,
    OrderMessage,
    PatientFacts,
    PatientIdentifier,
    PatientMerge,
)
from imaging.models import (
    OPEN_STUDY_STATUSES,
    Instance,
    Order,
    OrderStatus,
    Patient,
    Series,
    Study,
    StudyStatus,
)
from imaging.signals import study_cancelled, study_routable
from imaging.storage import StoredFile

log = logging.getLogger(__name__)

NEW_OR_CHANGED = {"NW", "XO", "XX", "SC"}
CANCELLING = {"CA", "DC", "OC", "OD", "CR", "DR"}


class IngestConflict(Exception):
    """The message or image contradicts what is recorded (e.g. a Study UID already used by another
    facility). Nothing was applied; the caller records it for an analyst."""


# --- patients ------------------------------------------------------------------------------------


def _authority(facility: Facility, identifier: PatientIdentifier) -> str:
    return identifier.assigning_authority or facility.code


def patient_find(*, facility: Facility, identifier: PatientIdentifier) -> Patient | None:
    patient = Patient.objects.filter(
        facility=facility, assigning_authority=_authority(facility, identifier), mrn=identifier.mrn
    ).first()
    # a merged record is never used again: follow it to the survivor
    while patient is not None and patient.merged_into_id:
        patient = patient.merged_into
    return patient


@transaction.atomic
def patient_upsert(*, facility: Facility, facts: PatientFacts) -> Patient:
    """Find the patient by MRN + assigning authority at the facility, creating or updating the
    demographics. Saves only when something changed, so the audit log records real changes."""
    patient = patient_find(facility=facility, identifier=facts.identifier)
    if patient is None:
        patient, _ = Patient.objects.get_or_create(
            facility=facility,
            assigning_authority=_authority(facility, facts.identifier),
            mrn=facts.identifier.mrn,
            defaults=_demographics(facts),
        )
        return patient
    _patient_demographics_set(patient, facts)
    return patient


def _demographics(facts: PatientFacts) -> dict:
    values = {
        "family_name": facts.family_name,
        "given_name": facts.given_name,
        "middle_name": facts.middle_name,
        "sex": facts.sex or "U",
    }
    if facts.birth_date is not None:
        values["birth_date"] = facts.birth_date
    return values


def _patient_demographics_set(patient: Patient, facts: PatientFacts) -> None:
    changed = [name for name, value in _demographics(facts).items() if getattr(patient, name) != value]
    for name in changed:
        setattr(patient, name, _demographics(facts)[name])
    if changed:
        patient.save(update_fields=[*changed, "updated_at"])


@transaction.atomic
def patient_demographics_update(*, facility: Facility, update: DemographicsUpdate) -> Patient | None:
    """ADT^A08: update the demographics of a known patient. Orders and studies point at the patient
    record, so open orders and studies show the new demographics at once. An unknown patient has
    nothing open here: nothing to do (None)."""
    patient = patient_find(facility=facility, identifier=update.patient.identifier)
    if patient is not None:
        _patient_demographics_set(patient, update.patient)
    return patient


@transaction.atomic
def patients_merge(*, facility: Facility, merge: PatientMerge) -> list[Patient]:
    """ADT^A40: re-key the prior patients' orders and studies to the surviving patient. Each moved
    row is saved individually so the audit log shows what moved; the prior record keeps its
    identity and points at the survivor (``merged_into``)."""
    surviving = patient_upsert(facility=facility, facts=merge.surviving)
    merged = []
    for identifier in merge.prior:
        prior = Patient.objects.filter(
            facility=facility, assigning_authority=_authority(facility, identifier), mrn=identifier.mrn
        ).first()
        if prior is None or prior.pk == surviving.pk:
            continue
        for row in [*prior.orders.all(), *prior.studies.all()]:
            row.patient = surviving
            row.save(update_fields=["patient", "updated_at"])
        prior.merged_into = surviving
        prior.save(update_fields=["merged_into", "updated_at"])
        merged.append(prior)
    return merged


# --- orders --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderOutcome:
    order_id: int | None
    action: str  # created, updated, cancelled, ignored
    note: str = ""


@transaction.atomic
def order_message_apply(*, facility: Facility, message: OrderMessage) -> list[OrderOutcome]:
    """Apply an ORM^O01/OMI^O23: one outcome per ORC/OBR group, in message order."""
    patient = patient_upsert(facility=facility, facts=message.patient)
    return [_order_apply(facility, patient, facts, message.sent_at) for facts in message.orders]


def _order_apply(
    facility: Facility, patient: Patient, facts: OrderFacts, sent_at: datetime | None
) -> OrderOutcome:
    if facts.control in CANCELLING:
        return _order_cancel(facility, facts)
    return _order_upsert(facility, patient, facts, sent_at)


def _order_lookup(facility: Facility, facts: OrderFacts) -> Order | None:
    """By accession; by placer order number only when the message has no accession (one placer
    order may hold several requested procedures, each with its own accession)."""
    if facts.accession_number:
        return Order.objects.filter(facility=facility, accession_number=facts.accession_number).first()
    if facts.placer_order_number:
        return Order.objects.filter(facility=facility, placer_order_number=facts.placer_order_number).first()
    return None


def _order_upsert(
    facility: Facility, patient: Patient, facts: OrderFacts, sent_at: datetime | None
) -> OrderOutcome:
    texts = (facts.procedure_text, facts.reason, facts.clinical_information, *facts.notes)
    priority, is_stroke = order_priority_class(
        priority_code=facts.priority_code,
        procedure_code=facts.procedure_code,
        texts=texts,
        patient_class=facts.patient_class,
    )
    values = {
        "patient": patient,
        "placer_order_number": facts.placer_order_number,
        "filler_order_number": facts.filler_order_number,
        "procedure_code": facts.procedure_code,
        "procedure_text": facts.procedure_text,
        "procedure_coding_system": facts.procedure_coding_system,
        "priority": priority,
        "reason": facts.reason or facts.clinical_information,
        "ordering_provider_id": facts.ordering_provider_id,
        "ordering_provider_name": facts.ordering_provider_name,
        "ordering_provider_xcn": dict(facts.ordering_provider_xcn),
        # HL7 times without an offset are the facility's local time
        "ordered_at": _aware(facts.ordered_at or sent_at, facility),
        "scheduled_at": _aware(facts.scheduled_at, facility),
    }
    order = _order_lookup(facility, facts)
    if order is None:
        # XO for an order we never saw is applied as new: the NW may have gone to a downtime queue.
        order = Order.objects.create(
            facility=facility, accession_number=facts.accession_number, status=_order_status(facts), **values
        )
        action = "created"
    else:
        if order.status in (OrderStatus.CANCELLED, OrderStatus.DISCONTINUED) and facts.control == "NW":
            return OrderOutcome(order.pk, "ignored", "NW for an order already cancelled")
        changed = [k for k, v in values.items() if getattr(order, k) != v]
        status = _order_status(facts, current=order.status)
        if status != order.status:
            order.status = status
            changed.append("status")
        for name in changed:
            if name != "status":
                setattr(order, name, values[name])
        if changed:
            order.save(update_fields=[*changed, "updated_at"])
        action = "updated"
    _studies_link(order, is_stroke=is_stroke)
    return OrderOutcome(order.pk, action)


def _order_status(facts: OrderFacts, current: str = OrderStatus.SCHEDULED) -> str:
    """ORC-5 (table 0038) when given: IP in progress, CM completed; otherwise unchanged."""
    return {"IP": OrderStatus.IN_PROGRESS, "CM": OrderStatus.COMPLETED, "SC": OrderStatus.SCHEDULED}.get(
        facts.order_status.upper(), current
    )


def _studies_link(order: Order, *, is_stroke: bool) -> None:
    """Images that arrived before their order are matched by accession within the facility."""
    for study in Study.objects.filter(facility=order.facility, accession_number=order.accession_number):
        became_stroke = is_stroke and not study.is_stroke
        # Already announced: complete, or a stroke (announced at its first image) with images.
        announced = study.status == StudyStatus.COMPLETE or (study.is_stroke and study.first_received_at)
        fields = {
            "order": order,
            "patient": order.patient,
            "priority": order.priority,
            "is_stroke": is_stroke,
        }
        changed = [k for k, v in fields.items() if getattr(study, k) != v]
        for name in changed:
            setattr(study, name, fields[name])
        if changed:
            study.save(update_fields=[*changed, "updated_at"])
        if became_stroke and study.status == StudyStatus.RECEIVING:
            _announce(study_routable, study.pk)
        elif "priority" in changed and announced:
            # An order change (ORC XO) of the priority: routing re-runs so the clock and deadline follow.
            _announce(study_routable, study.pk)


def _order_cancel(facility: Facility, facts: OrderFacts) -> OrderOutcome:
    order = _order_lookup(facility, facts)
    if order is None:
        return OrderOutcome(None, "ignored", f"{facts.control} for an unknown order {facts.accession_number}")
    order.status = OrderStatus.DISCONTINUED if facts.control in {"DC", "OD", "DR"} else OrderStatus.CANCELLED
    order.cancelled_at = timezone.now()
    order.save(update_fields=["status", "cancelled_at", "updated_at"])
    # A study already read stays as it is (its report is legal record and was billed); only studies
    # still to be read are cancelled and leave the worklists.
    for study in order.studies.filter(status__in=OPEN_STUDY_STATUSES):
        study.status = StudyStatus.CANCELLED
        study.save(update_fields=["status", "updated_at"])
        _announce(study_cancelled, study.pk)
    return OrderOutcome(order.pk, "cancelled")


# --- images --------------------------------------------------------------------------------------


@dataclass
class IndexCache:
    """Studies and series already looked up during one association (or one STOW request): the
    rest of a 300-slice series skips those queries. Only identity is cached, never counters."""

    studies: dict[str, Study] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceRecorded:
    instance_id: int
    study_id: int
    created: bool  # False: the SOP Instance UID was already stored (idempotent resend)
    study_created: bool


def instance_stored(
    *,
    facility: Facility,
    header: InstanceHeader,
    stored: StoredFile,
    received_at: datetime,
    cache: IndexCache | None = None,
    before_commit: Callable[[], object] | None = None,
    made_by=None,
) -> InstanceRecorded:
    """Index one stored instance: study, series and instance rows, counters, order matching.
    Idempotent on SOP Instance UID. A stroke study is announced routable at its first instance.
    ``before_commit`` runs inside the transaction, last: if it raises, nothing is indexed (ingest
    passes the wait for the file's fsync).

    ``made_by`` (a user): an object that reader made from the study's images in the viewer (a measurement SR,
    a key-object selection; docs/viewer.md). It is kept with the study, in its own series, but it
    is not an arrival of images: the study must exist already, and its image counts, modalities,
    last arrival (the quiet period), status and routing are left as they are."""
    cache = cache if cache is not None else IndexCache()
    for attempt in range(3):
        try:
            with transaction.atomic():
                recorded = _instance_index(facility, header, stored, received_at, cache, made_by)
                if before_commit is not None:
                    before_commit()
                return recorded
        except IntegrityError:
            # another association created the same study/series/instance at the same moment
            cache.studies.clear()
            cache.series.clear()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _instance_index(
    facility, header: InstanceHeader, stored: StoredFile, received_at, cache: IndexCache, made_by
) -> InstanceRecorded:
    derived = made_by is not None
    study = cache.studies.get(header.study_instance_uid)
    study_created = False
    if study is None and derived:
        study = Study.objects.filter(study_instance_uid=header.study_instance_uid, facility=facility).first()
        if study is None:
            raise IngestConflict(f"Study {header.study_instance_uid} is not stored here")
        cache.studies[header.study_instance_uid] = study
    if study is None:
        study, study_created = _study_for(facility, header, received_at)
        cache.studies[header.study_instance_uid] = study
    series_id = cache.series.get(header.series_instance_uid)
    series_created = False
    if series_id is None:
        series, series_created = _series_for(study, header, received_at, made_by)
        series_id = cache.series[header.series_instance_uid] = series.pk
    if not series_created and not derived and connection.vendor == "postgresql":
        # The rest of a series (299 of 300 slices): one statement instead of four.
        instance_id = _instance_insert_counted(series_id, study.pk, header, stored, received_at)
        if instance_id is None:
            return _instance_existing(header, series_id, study.pk)
        return InstanceRecorded(instance_id, study.pk, True, False)
    if Instance.objects.filter(sop_instance_uid=header.sop_instance_uid).exists():
        return _instance_existing(header, series_id, study.pk)
    # A concurrent insert of the same UID raises IntegrityError: the whole transaction is retried.
    instance = Instance.objects.create(
        series_id=series_id,
        sop_instance_uid=header.sop_instance_uid,
        sop_class_uid=header.sop_class_uid,
        transfer_syntax_uid=header.transfer_syntax_uid,
        instance_number=header.instance_number,
        storage_path=stored.relative_path,
        storage_key_id=stored.key_id,
        size_bytes=stored.size_bytes,
        received_at=received_at,
    )
    Series.objects.filter(pk=series_id).update(
        number_of_instances=F("number_of_instances") + 1, last_received_at=received_at
    )
    if derived:
        return InstanceRecorded(instance.pk, study.pk, True, False)
    study_updates = {"number_of_instances": F("number_of_instances") + 1, "last_received_at": received_at}
    if series_created:
        study_updates["number_of_series"] = F("number_of_series") + 1
        if header.modality and header.modality not in study.modalities.split("\\"):
            study.modalities = "\\".join(filter(None, [study.modalities, header.modality]))[:64]
            study_updates["modalities"] = study.modalities  # the cached study keeps up
    Study.objects.filter(pk=study.pk).update(**study_updates)
    if study_created and study.is_stroke:
        _announce(study_routable, study.pk)
    return InstanceRecorded(instance.pk, study.pk, True, study_created)


def _instance_existing(header: InstanceHeader, series_id: int, study_id: int) -> InstanceRecorded:
    """A resent instance: idempotent when it is the same series, a conflict otherwise."""
    pk, stored_series_id = (
        Instance.objects.filter(sop_instance_uid=header.sop_instance_uid).values_list("pk", "series_id").get()
    )
    if stored_series_id != series_id:
        raise IngestConflict(f"SOP Instance {header.sop_instance_uid} is already stored in another series")
    return InstanceRecorded(pk, study_id, False, False)


_INSTANCE_INSERT_COUNTED = """
WITH new AS (
    INSERT INTO imaging_instance (series_id, sop_instance_uid, sop_class_uid, transfer_syntax_uid,
        instance_number, storage_path, storage_key_id, size_bytes, received_at)
    VALUES (%(series)s, %(sop)s, %(sop_class)s, %(syntax)s, %(number)s, %(path)s, %(key)s, %(size)s,
        %(received)s)
    ON CONFLICT (sop_instance_uid) DO NOTHING
    RETURNING id
), series AS (
    UPDATE imaging_series SET number_of_instances = number_of_instances + 1,
        last_received_at = %(received)s
    WHERE id = %(series)s AND EXISTS (SELECT FROM new)
), study AS (
    UPDATE imaging_study SET number_of_instances = number_of_instances + 1,
        last_received_at = %(received)s
    WHERE id = %(study)s AND EXISTS (SELECT FROM new)
)
SELECT id FROM new
"""


def _instance_insert_counted(
    series_id: int, study_id: int, header: InstanceHeader, stored: StoredFile, received_at: datetime
) -> int | None:
    """The instance row and both counters in one round trip (PostgreSQL data-modifying CTEs): the
    ORM's SELECT + INSERT + two UPDATEs cost ~4 round trips and ~1.5 ms of Python per instance.
    None when the SOP Instance UID is already stored (ON CONFLICT also waits for a concurrent
    insert of the same UID to commit, so a race ends here too instead of in an IntegrityError)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _INSTANCE_INSERT_COUNTED,
            {
                "series": series_id,
                "study": study_id,
                "sop": header.sop_instance_uid,
                "sop_class": header.sop_class_uid,
                "syntax": header.transfer_syntax_uid,
                "number": header.instance_number,
                "path": stored.relative_path,
                "key": stored.key_id,
                "size": stored.size_bytes,
                "received": received_at,
            },
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _study_for(facility: Facility, header: InstanceHeader, received_at) -> tuple[Study, bool]:
    study = Study.objects.filter(study_instance_uid=header.study_instance_uid).first()
    if study is not None:
        if study.facility_id != facility.pk:
            # Never mix two hospitals' images in one study: a reader privileged at one would see the other's.
            raise IngestConflict(f"Study {header.study_instance_uid} belongs to another facility")
        return study, False
    accession = header.accession_number
    if accession and Study.objects.filter(facility=facility, accession_number=accession).exists():
        log.warning(
            "accession %s already has another study at %s; indexing without it", accession, facility.code
        )
        accession = ""
    order = (
        Order.objects.select_related("patient").filter(facility=facility, accession_number=accession).first()
        if accession
        else None
    )
    texts = (header.study_description, header.series_description)
    is_stroke = bool(order and order.priority == PriorityClass.STROKE) or stroke_detected(texts=texts)
    study = Study.objects.create(
        facility=facility,
        study_instance_uid=header.study_instance_uid,
        accession_number=accession,
        order=order,
        patient=order.patient if order else _patient_from_header(facility, header),
        modalities=header.modality,
        description=header.study_description,
        body_part=header.body_part,
        study_datetime=_aware(header.study_datetime, facility),
        priority=PriorityClass.STROKE if is_stroke else (order.priority if order else PriorityClass.ROUTINE),
        is_stroke=is_stroke,
        first_received_at=received_at,
        last_received_at=received_at,
    )
    return study, True


def _series_for(study: Study, header: InstanceHeader, received_at, made_by=None) -> tuple[Series, bool]:
    series, created = Series.objects.get_or_create(
        series_instance_uid=header.series_instance_uid,
        defaults={
            "study": study,
            "made_by": made_by,
            "series_number": header.series_number,
            "modality": header.modality,
            "description": header.series_description,
            "body_part": header.body_part,
            "first_received_at": received_at,
            "last_received_at": received_at,
        },
    )
    if series.study_id != study.pk:
        raise IngestConflict(f"Series {header.series_instance_uid} belongs to another study")
    if (made_by is not None) != (series.made_by_id is not None):
        # A reader's objects and the modality's images never share a series.
        raise IngestConflict(f"Series {header.series_instance_uid} mixes a reader's objects with images")
    return series, created


def _patient_from_header(facility: Facility, header: InstanceHeader) -> Patient | None:
    """Images without an order yet: the patient from the header, replaced by the order's when it comes."""
    if not header.patient_id:
        return None
    facts = PatientFacts(
        identifier=PatientIdentifier(header.patient_id, header.issuer_of_patient_id),
        family_name=header.patient_family_name,
        given_name=header.patient_given_name,
        birth_date=header.patient_birth_date,
        sex=header.patient_sex if header.patient_sex in {"F", "M", "O"} else "U",
    )
    existing = patient_find(facility=facility, identifier=facts.identifier)
    return existing or patient_upsert(facility=facility, facts=facts)


def _aware(value: datetime | None, facility: Facility) -> datetime | None:
    if value is None or timezone.is_aware(value):
        return value
    return value.replace(tzinfo=facility.zone)


@transaction.atomic
def studies_complete_quiet(*, now: datetime | None = None) -> list[int]:
    """Mark complete every receiving study whose facility's quiet period has passed since its last
    image (DESIGN.md §4). The completion time is the last image's arrival: the exam was complete
    then, and the radiologist's turnaround clock starts there, not when we noticed."""
    now = now or timezone.now()
    completed = []
    candidates = Study.objects.filter(
        status=StudyStatus.RECEIVING, last_received_at__isnull=False
    ).select_related("facility")
    for study in candidates:
        if (now - study.last_received_at).total_seconds() < study.facility.study_quiet_seconds:
            continue
        # compare-and-set: several sweepers may run; only the one that flips the row announces it
        flipped = Study.objects.filter(pk=study.pk, status=StudyStatus.RECEIVING).update(
            status=StudyStatus.COMPLETE, completed_at=study.last_received_at
        )
        if flipped:
            completed.append(study.pk)
            if not study.is_stroke:  # stroke studies were announced at their first image
                _announce(study_routable, study.pk)
    return completed


def _announce(signal, study_id: int) -> None:
    transaction.on_commit(lambda: signal.send(sender=Study, study_id=study_id))
