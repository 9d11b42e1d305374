"""Writes for patients, orders and studies — what ingest applies once a message or image is
safely stored. Keyword-only, atomic; signals to routing go out after commit."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.db.models import F
from django.utils import timezone

from accounts.audit import audit_as
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
    Sent,
    hl7_update,
)
from imaging.models import (
    OPEN_STUDY_STATUSES,
    AiResult,
    Instance,
    Order,
    OrderMatch,
    OrderStatus,
    Patient,
    PriorFetch,
    PriorState,
    RetrievalStatus,
    Series,
    Study,
    StudyStatus,
)
from imaging.signals import ai_result_recorded, instance_display_checked, study_cancelled, study_routable
from imaging.storage import StorageError, StoredFile, encrypted_read

log = logging.getLogger(__name__)

NEW_OR_CHANGED = {"NW", "XO", "XX", "SC"}
CANCELLING = {"CA", "DC", "OC", "OD", "CR", "DR"}


class IngestConflict(Exception):
    """The message or image contradicts what is recorded (e.g. a Study UID already used by another
    facility). Nothing was applied; the caller records it for an analyst."""


class StudyNotYetStored(IngestConflict):
    """A derived object (an AI result) for a Study Instance UID no facility holds yet: its images may
    still be on the way (the AI node can be quicker than the modality's forward). The edge keeps it
    and links it when the study arrives (``interfaces.dicom.quarantine.ai_objects_waiting_link``)."""


# --- patients ------------------------------------------------------------------------------------


def _authority(facility: Facility, identifier: PatientIdentifier) -> str:
    """The identity domain the identifier belongs to (docs/orders.md): the images' Issuer of Patient
    ID and the order's PID-3.4 name the same domain through the facility's configuration."""
    return facility.patient_authority(identifier.assigning_authority)


def _holders(facility: Facility, identifier: PatientIdentifier) -> list[Patient]:
    """Records that hold this identifier, the live one under the domain's own authority first. A
    record may still be kept under another name of the domain (created before the facility named
    that issuer part of it), so every name counts. One indexed query on (facility, MRN)."""
    authority, names = facility.patient_id_domain()
    issuer = identifier.assigning_authority.strip().casefold()
    wanted = names if issuer in names else {issuer}
    rows = [
        p
        for p in Patient.objects.filter(facility=facility, mrn=identifier.mrn)
        if p.assigning_authority.casefold() in wanted
    ]
    return sorted(
        rows, key=lambda p: (p.merged_into_id is not None, p.assigning_authority != authority, p.pk)
    )


def patient_find(
    *, facility: Facility, identifier: PatientIdentifier, absent: KnownAbsent | None = None
) -> Patient | None:
    if absent is not None and absent.patient_absent(facility, identifier.mrn):
        return None  # no record held this MRN when the batch began, and no message since named it
    holders = _holders(facility, identifier)
    patient = holders[0] if holders else None
    # a merged record is never used again: follow its link to the survivor
    while patient is not None and patient.merged_into_id:
        patient = patient.merged_into
    return patient


# savepoint=False: every caller already runs in a transaction of its own (or this opens one), and
# none catches an error from here to go on: one savepoint less per message (bench/hl7 --apply).
@transaction.atomic(savepoint=False)
def patient_upsert(*, facility: Facility, facts: PatientFacts, absent: KnownAbsent | None = None) -> Patient:
    """Find the patient by MRN in the facility's identity domain, creating or updating the
    demographics. Saves only when something changed, so the audit log records real changes.
    ``absent``: a batch's negative cache (``KnownAbsent``); its caller handles the unique
    violation of a record another connection created meanwhile (it retries the message)."""
    patient = patient_find(facility=facility, identifier=facts.identifier, absent=absent)
    if patient is None:
        # get_or_create without its first SELECT: patient_find just looked (one query less per new
        # patient); only another connection creating the same record at once lands in the except
        key = {
            "facility": facility,
            "assigning_authority": _authority(facility, facts.identifier),
            "mrn": facts.identifier.mrn,
        }
        if absent is not None:  # no savepoint of its own: the batch's message savepoint is the one
            return Patient.objects.create(**key, **_demographics(facts))
        try:
            with transaction.atomic():
                return Patient.objects.create(**key, **_demographics(facts))
        except IntegrityError:
            return Patient.objects.get(**key)
    _patient_demographics_set(patient, facts)
    return patient


PATIENT_FIELDS = ("family_name", "given_name", "middle_name", "birth_date", "sex")


def _cleared(model: type, name: str):
    """What ``""`` leaves in a field: None where the column allows it, the field's own default
    otherwise ("" for text, "U" for sex, [] or {} for JSON)."""
    field = model._meta.get_field(name)
    if field.null:
        return None
    default = field.get_default()
    return default if default is not None else ""


def fields_updated(instance, sent: dict[str, Sent]) -> list[str]:
    """Apply what a message sent to a model instance, field by field, through ``hl7_update``; the
    names of the fields that changed (saved by the caller with ``update_fields``, so the audit log
    records only real changes)."""
    changed = []
    for name, value in sent.items():
        new = hl7_update(getattr(instance, name), value, cleared=_cleared(type(instance), name))
        if new != getattr(instance, name):
            setattr(instance, name, new)
            changed.append(name)
    return changed


def _patient_sent(facts: PatientFacts) -> dict[str, Sent]:
    return {name: getattr(facts, name) for name in PATIENT_FIELDS}


def _demographics(facts: PatientFacts) -> dict:
    """A new patient's fields: the model's defaults with what was sent applied."""
    blank = Patient()
    fields_updated(blank, _patient_sent(facts))
    return {name: getattr(blank, name) for name in PATIENT_FIELDS}


def _patient_demographics_set(patient: Patient, facts: PatientFacts) -> None:
    changed = fields_updated(patient, _patient_sent(facts))
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
    """ADT^A40: MRG-1 (the prior, incorrect identifier) is merged into PID-3 (the survivor) and is
    never used again (v2.5.1 §3.3.40). The prior's orders and studies move to the survivor, each row
    saved on its own so the audit log shows what moved; the prior record stays as a link
    (``merged_into``), so its identifier still finds the survivor. A prior we never saw is recorded
    as a link too: images that still carry the old MRN land on the survivor."""
    surviving = patient_upsert(facility=facility, facts=merge.surviving)
    merged = []
    for identifier in merge.prior:
        live = [p for p in _holders(facility, identifier) if p.merged_into_id is None]
        prior = next((p for p in live if p.pk != surviving.pk), None)
        if prior is None:
            if patient_find(facility=facility, identifier=identifier) is None:
                Patient.objects.create(
                    facility=facility,
                    assigning_authority=_authority(facility, identifier),
                    mrn=identifier.mrn,
                    merged_into=surviving,
                )
            continue
        patient_merge_into(prior=prior, surviving=surviving)
        merged.append(prior)
    return merged


def patient_merge_into(*, prior: Patient, surviving: Patient) -> None:
    """Move every order and study of ``prior`` to ``surviving`` and leave ``prior`` as a link."""
    for row in [*prior.orders.all(), *prior.studies.all()]:
        row.patient = surviving
        row.save(update_fields=["patient", "updated_at"])
    for earlier in prior.merged_from.all():  # links to the prior now lead straight to the survivor
        earlier.merged_into = surviving
        earlier.save(update_fields=["merged_into", "updated_at"])
    prior.merged_into = surviving
    prior.save(update_fields=["merged_into", "updated_at"])


class PatientCorrectionRefused(ValueError):
    """A correction by hand that the identity rules do not allow; nothing was written."""


@dataclass(frozen=True)
class PatientCorrected:
    """What a correction by hand did: the record now answering for the person (the survivor when
    the edited record was merged into it) and the fields written on the edited record."""

    patient: Patient
    merged: bool
    changed: tuple[str, ...]


def patient_identifier_holder(patient: Patient, identifier: PatientIdentifier) -> Patient | None:
    """The other live patient that ``identifier`` already names at the patient's facility, by the
    rules HL7 and images follow (every name of the MRN domain, merge links followed); None when
    the identifier is free or names this patient."""
    for holder in _holders(patient.facility, identifier):
        while holder.merged_into_id:
            holder = holder.merged_into
        if holder.pk != patient.pk:
            return holder
    return None


def _key_taken(patient: Patient, *, mrn: str, assigning_authority: str) -> bool:
    others = Patient.objects.filter(facility_id=patient.facility_id, mrn=mrn).exclude(pk=patient.pk)
    return others.filter(assigning_authority=assigning_authority).exists()


def patient_correction_refusal(
    patient: Patient, identifier: PatientIdentifier | None, demographics: dict[str, object]
) -> str | None:
    """Why ``patient_correct`` would refuse this correction, or None: the form asks first so that
    the page shows it beside the fields."""
    if patient.merged_into_id:
        return "This record was merged into another patient and is only a link now."
    if identifier is None:
        return None
    holder = patient_identifier_holder(patient, identifier)
    if holder is not None:
        if any(getattr(patient, name) != value for name, value in demographics.items()):
            return (
                f"MRN {identifier.mrn} is {holder}'s: saving merges this record into that patient, "
                "whose demographics stay. Save the identifier alone."
            )
        return None
    authority = _authority(patient.facility, identifier)
    if _key_taken(patient, mrn=identifier.mrn, assigning_authority=authority):
        # only a link of this very patient can hold it (another holder would be merged into)
        return (
            f"MRN {identifier.mrn} ({authority}) is already this patient's, kept as a link from an "
            "earlier merge: nothing to correct."
        )
    return None


@transaction.atomic
def patient_correct(
    *,
    patient: Patient,
    identifier: PatientIdentifier | None,
    demographics: dict[str, object],
    actor,
    reason: str,
) -> PatientCorrected:
    """A patient corrected by hand (the Django admin, docs/orders.md). ``identifier`` (None: not
    changed) goes through the identity rules an order or an image would meet: its issuer is mapped
    to the facility's MRN domain, and an identifier that already names another patient merges this
    record into that one as an ADT^A40 does (``patient_merge_into``: orders and studies move, this
    record stays a link under its old identifier, so images still carrying it land on the
    survivor). ``demographics`` are whole values (a form, not HL7: blank means blank). Audited
    under ``actor`` with ``reason``; only the fields that changed are saved."""
    patient = Patient.objects.select_for_update().select_related("facility").get(pk=patient.pk)
    refusal = patient_correction_refusal(patient, identifier, demographics)
    if refusal:
        raise PatientCorrectionRefused(refusal)
    with audit_as(actor, reason=reason):
        holder = patient_identifier_holder(patient, identifier) if identifier else None
        if holder is not None:
            patient_merge_into(prior=patient, surviving=holder)
            return PatientCorrected(holder, merged=True, changed=("merged_into",))
        wanted = dict(demographics)
        if identifier is not None:
            wanted.update(mrn=identifier.mrn, assigning_authority=_authority(patient.facility, identifier))
        changed = tuple(name for name, value in wanted.items() if getattr(patient, name) != value)
        for name in changed:
            setattr(patient, name, wanted[name])
        if changed:
            patient.save(update_fields=[*changed, "updated_at"])
        return PatientCorrected(patient, merged=False, changed=changed)


DOMAIN_MERGE_REASON = "identity domain merge: same MRN under two names of one facility's MRN domain"


@dataclass(frozen=True)
class DomainMerge:
    """One person's records found under two names of the facility's MRN domain."""

    mrn: str
    survivor: Patient
    merged: tuple[Patient, ...]


def patients_domain_merge(*, facility: Facility, actor=None, dry_run: bool = False) -> list[DomainMerge]:
    """Merge the duplicates a change of the facility's MRN domain revealed: an issuer named later
    (the PACS's (0010,0021), a new HL7 sender's MSH-4) makes two records of one MRN the same
    person. As migration imaging/0013 did for the first domains, and as an A40 does
    (``patient_merge_into``): the survivor is the record under the domain's own authority, else one
    with orders (the EMR's demographics), else the oldest; the others stay as links. Every row
    moved is in the audit log with the reason and ``actor``. Idempotent; ``dry_run`` writes nothing."""
    facility = Facility.objects.get(pk=facility.pk)  # the domain as saved now, not a stale cache
    authority, names = facility.patient_id_domain()
    groups: dict[str, list[Patient]] = {}
    for patient in Patient.objects.filter(facility=facility, merged_into=None).order_by("pk"):
        if patient.assigning_authority.casefold() in names:
            groups.setdefault(patient.mrn, []).append(patient)
    merges = []
    for mrn, group in groups.items():
        if len(group) < 2:
            continue
        group.sort(key=lambda p: (p.assigning_authority != authority, not p.orders.exists(), p.pk))
        merges.append(DomainMerge(mrn, group[0], tuple(group[1:])))
    if dry_run or not merges:
        return merges
    with transaction.atomic(), audit_as(actor, reason=DOMAIN_MERGE_REASON):
        for merge in merges:
            for prior in merge.merged:
                patient_merge_into(prior=prior, surviving=merge.survivor)
            _authority_canonical(facility, merge.survivor, authority)
    return merges


def _authority_canonical(facility: Facility, patient: Patient, authority: str) -> None:
    """The survivor is kept under the domain's own authority, the one the ORU sends back in PID-3.4."""
    taken = Patient.objects.filter(facility=facility, mrn=patient.mrn, assigning_authority=authority)
    if patient.assigning_authority != authority and not taken.exists():
        patient.assigning_authority = authority
        patient.save(update_fields=["assigning_authority", "updated_at"])


def on_facility_domain_changed(sender, facility: Facility, actor=None, **kwargs) -> list[str]:
    """Receiver of ``facilities.signals.identity_domain_changed`` (an onboarding re-apply that named
    another issuer): merge what became duplicates; the lines say so in the onboarding output."""
    merges = patients_domain_merge(facility=facility, actor=actor)
    return [
        f"patients: merged MRN {m.mrn} ({', '.join(p.assigning_authority or '(empty)' for p in m.merged)}) "
        f"into patient {m.survivor.pk}"
        for m in merges
    ]


# --- orders --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderOutcome:
    order_id: int | None
    action: str  # created, updated, cancelled, ignored
    note: str = ""


class OrderRelinks:
    """Orders whose images are still to be (re)linked, gathered over a batch of messages of one
    sender and linked together by ``orders_images_relink`` (one query for all their studies instead
    of one or two per message). The batch links them before any message that could see or change
    the link — one naming a pending order again, a cancel, an ADT — so the result is the one
    linking each order at once would give."""

    def __init__(self) -> None:
        self.pending: dict[int, tuple[Order, bool]] = {}  # order id → (order, is_stroke), in order
        self._keys: set[tuple[str, str]] = set()

    def add(self, order: Order, *, is_stroke: bool) -> None:
        self.pending[order.pk] = (order, is_stroke)
        self._keys.update(_order_keys(order.accession_number, order.placer_order_number))

    def touches(self, message: OrderMessage) -> bool:
        """Whether applying ``message`` before the pending links could differ from after them."""
        return any(
            facts.control in CANCELLING
            or not self._keys.isdisjoint(_order_keys(facts.accession_number, facts.placer_order_number))
            for facts in message.orders
        )

    def flush(self) -> None:
        orders, self.pending, self._keys = list(self.pending.values()), {}, set()
        if orders:
            orders_images_relink(orders)


class KnownAbsent:
    """A batch's negative cache: the patients (by MRN) and orders (by accession, by placer number)
    its order messages name that did not exist when the batch began — one query each for the
    whole batch, so a new patient and a new order cost no SELECT of their own (bench/hl7). Only
    absence is kept, and each key is used once: the first message naming it may create it (or be
    rolled back), so every later message naming it looks it up as before. A message that is not
    an order (an ADT merge can re-key patients) clears it all (``clear``). Another connection may
    create one of these meanwhile (another sender of the same facility): the INSERT then meets
    the unique constraint and the batch applies that message again without the cache."""

    def __init__(self) -> None:
        self._patients: set[tuple[int, str]] = set()
        self._orders: set[tuple[int, str, str]] = set()

    def learn(self, facility: Facility, messages: list[OrderMessage]) -> None:
        mrns = {m.patient.identifier.mrn for m in messages}
        accessions = {o.accession_number for m in messages for o in m.orders if o.accession_number}
        placers = {
            o.placer_order_number
            for m in messages
            for o in m.orders
            if not o.accession_number and o.placer_order_number
        }
        held = set(Patient.objects.filter(facility=facility, mrn__in=mrns).values_list("mrn", flat=True))
        self._patients |= {(facility.pk, mrn) for mrn in mrns - held}
        orders = Order.objects.filter(facility=facility).filter(
            models.Q(accession_number__in=accessions) | models.Q(placer_order_number__in=placers)
        )
        taken_a, taken_p = set(), set()
        for accession, placer in orders.values_list("accession_number", "placer_order_number"):
            taken_a.add(accession)
            taken_p.add(placer)
        self._orders |= {(facility.pk, "A", a) for a in accessions - taken_a}
        self._orders |= {(facility.pk, "P", p) for p in placers - taken_p}

    def patient_absent(self, facility: Facility, mrn: str) -> bool:
        key = (facility.pk, mrn)
        if key in self._patients:
            self._patients.discard(key)
            return True
        return False

    def order_absent(self, facility: Facility, facts: OrderFacts) -> bool:
        """Whether ``_order_lookup`` would find nothing. Either way, both of the order's keys are
        forgotten: this message may create the order, or give an existing one this placer number."""
        if facts.accession_number:
            key = (facility.pk, "A", facts.accession_number)
        else:
            key = (facility.pk, "P", facts.placer_order_number)
        found = key in self._orders
        self._orders.discard((facility.pk, "A", facts.accession_number))
        self._orders.discard((facility.pk, "P", facts.placer_order_number))
        return found

    def forget(self, message: OrderMessage, facility: Facility) -> None:
        """Every key ``message`` names (it failed, or is applied again without the cache)."""
        self._patients.discard((facility.pk, message.patient.identifier.mrn))
        for facts in message.orders:
            self.order_absent(facility, facts)

    def clear(self) -> None:
        self._patients.clear()
        self._orders.clear()


def _order_keys(accession: str, placer: str) -> set[tuple[str, str]]:
    return {key for key in (("A", accession), ("P", placer or "")) if key[1]}


# savepoint=False: as patient_upsert's; a caller that must survive a bad message (the HL7 drain)
# wraps each message in its own savepoint.
@transaction.atomic(savepoint=False)
def order_message_apply(
    *,
    facility: Facility,
    message: OrderMessage,
    relinks: OrderRelinks | None = None,
    absent: KnownAbsent | None = None,
) -> list[OrderOutcome]:
    """Apply an ORM^O01/OMI^O23: one outcome per ORC/OBR group, in message order. ``relinks``: the
    images of the orders are linked later, with other messages' (``OrderRelinks``); else now.
    ``absent``: the batch's negative cache (``KnownAbsent``)."""
    patient = patient_upsert(facility=facility, facts=message.patient, absent=absent)
    return [
        _order_apply(facility, patient, facts, message.sent_at, relinks, absent) for facts in message.orders
    ]


def _order_apply(
    facility: Facility,
    patient: Patient,
    facts: OrderFacts,
    sent_at: datetime | None,
    relinks: OrderRelinks | None = None,
    absent: KnownAbsent | None = None,
) -> OrderOutcome:
    if facts.control in CANCELLING:
        return _order_cancel(facility, facts, absent)
    return _order_upsert(facility, patient, facts, sent_at, relinks, absent)


def _order_lookup(facility: Facility, facts: OrderFacts, absent: KnownAbsent | None = None) -> Order | None:
    """By accession; by placer order number only when the message has no accession (one placer
    order may hold several requested procedures, each with its own accession)."""
    if absent is not None and absent.order_absent(facility, facts):
        return None
    if facts.accession_number:
        return Order.objects.filter(facility=facility, accession_number=facts.accession_number).first()
    if facts.placer_order_number:
        return Order.objects.filter(facility=facility, placer_order_number=facts.placer_order_number).first()
    return None


# Order fields a message can update, each from the OrderFacts attribute of the same name.
ORDER_SENT_FIELDS = (
    "placer_order_issuer",
    "filler_order_issuer",
    "accession_issuer",
    "requested_procedure_id",
    "scheduled_procedure_step_id",
    "study_instance_uid",
    "modality",
    "procedure_code",
    "procedure_text",
    "procedure_coding_system",
    "priority_code",
    "clinical_information",
    "ordering_provider_id",
    "ordering_provider_name",
    "patient_class",
    "patient_location",
    "visit_number",
    "visit_number_authority",
)
# Facts that decide the priority class: when none of them is sent the stored class stays.
PRIORITY_INPUTS = (
    "priority_code",
    "procedure_code",
    "reasons",
    "clinical_information",
    "notes",
    "patient_class",
)


def _listed(value):
    """Tuples from the parser → JSON-friendly lists; None and CLEAR pass through."""
    return list(value) if isinstance(value, tuple) else value


def _order_sent(facts: OrderFacts, facility: Facility) -> dict[str, Sent]:
    sent: dict[str, Sent] = {name: getattr(facts, name) for name in ORDER_SENT_FIELDS}
    sent["placer_order_number"] = facts.placer_order_number or None
    sent["filler_order_number"] = facts.filler_order_number or None
    sent["reasons_for_study"] = _listed(facts.reasons)
    sent["notes"] = _listed(facts.notes)
    sent["copies_to"] = _listed(facts.copies_to)
    xcn = facts.ordering_provider_xcn
    sent["ordering_provider_xcn"] = dict(xcn) if isinstance(xcn, tuple) else xcn
    # HL7 times without an offset are the facility's local time
    for name in ("ordered_at", "scheduled_at"):
        value = getattr(facts, name)
        sent[name] = _aware(value, facility) if isinstance(value, datetime) else value
    return sent


def _reason_text(order: Order) -> str:
    """``Order.reason``, the one-line reason lists show: every OBR-31 text, else OBR-13."""
    texts = [r.get("text") or r.get("code", "") for r in order.reasons_for_study or []]
    return "; ".join(t for t in texts if t) or order.clinical_information


def _order_upsert(
    facility: Facility,
    patient: Patient,
    facts: OrderFacts,
    sent_at: datetime | None,
    relinks: OrderRelinks | None = None,
    absent: KnownAbsent | None = None,
) -> OrderOutcome:
    order = _order_lookup(facility, facts, absent)
    created = order is None
    cancelled = order is not None and order.status in (OrderStatus.CANCELLED, OrderStatus.DISCONTINUED)
    if cancelled and facts.control == "NW":
        return OrderOutcome(order.pk, "ignored", "NW for an order already cancelled")
    if created:
        # XO for an order we never saw is applied as new: the NW may have gone to a downtime queue.
        order = Order(facility=facility, accession_number=facts.accession_number, status=_order_status(facts))
    changed = fields_updated(order, _order_sent(facts, facility))
    if order.patient_id != patient.pk:
        order.patient = patient
        changed.append("patient")
    if created and order.ordered_at is None:
        order.ordered_at = _aware(sent_at, facility)
    reason = _reason_text(order)
    if reason != order.reason:
        order.reason = reason
        changed.append("reason")
    is_stroke = order.priority == PriorityClass.STROKE
    if created or any(getattr(facts, name) is not None for name in PRIORITY_INPUTS):
        # the class follows the whole order as it now stands, not only what this message sent
        texts = (
            order.procedure_text,
            *(r.get("text", "") for r in order.reasons_for_study),
            order.clinical_information,
            *order.notes,
        )
        priority, is_stroke = order_priority_class(
            priority_code=order.priority_code,
            procedure_code=order.procedure_code,
            texts=texts,
            patient_class=order.patient_class,
        )
        if priority != order.priority:
            order.priority = priority
            changed.append("priority")
    status = _order_status(facts, current=order.status)
    if status != order.status:
        order.status = status
        changed.append("status")
    if created:
        order.save(force_insert=True)
    elif changed:
        order.save(update_fields=[*dict.fromkeys(changed), "updated_at"])
    if relinks is not None:
        relinks.add(order, is_stroke=is_stroke)
    else:
        _studies_link(order, is_stroke=is_stroke)
    return OrderOutcome(order.pk, "created" if created else "updated")


def _order_status(facts: OrderFacts, current: str = OrderStatus.SCHEDULED) -> str:
    """ORC-5 (table 0038) when given: IP in progress, CM completed; otherwise unchanged."""
    return {"IP": OrderStatus.IN_PROGRESS, "CM": OrderStatus.COMPLETED, "SC": OrderStatus.SCHEDULED}.get(
        facts.order_status.upper(), current
    )


def _studies_link(order: Order, *, is_stroke: bool) -> None:
    """Images that arrived before their order: matched by accession within the facility, then by
    the Study Instance UID the order carries (IPC-3 / ZDS-1). Each study records how. An accession
    matches only when its issuers agree (the images' kept on the study, ``_accession_issuers_agree``):
    another authority's coinciding number is not this order's."""
    by_accession = Study.objects.filter(facility=order.facility, accession_number=order.accession_number)
    candidates = [
        (study, OrderMatch.ACCESSION)
        for study in by_accession
        if _accession_issuers_agree(order.accession_issuer, study.accession_issuer)
    ]
    if order.study_instance_uid:
        seen = {study.pk for study, _ in candidates}
        by_uid = Study.objects.filter(
            facility=order.facility, study_instance_uid=order.study_instance_uid
        ).filter(models.Q(order__isnull=True) | models.Q(order=order))
        candidates += [(study, OrderMatch.STUDY_UID) for study in by_uid if study.pk not in seen]
    for study, how in candidates:
        study_order_link(study, order, how=how, is_stroke=is_stroke)


def orders_images_relink(orders: list[tuple[Order, bool]]) -> None:
    """``_studies_link`` for many orders (each with its is_stroke), in their order, with one query
    for every study they could match: by accession, or by Study Instance UID where the study has no
    order or has this one. The studies are the same objects throughout, so a study one order takes
    by UID is not taken by a later order, as one query per order would see it."""
    if not orders:
        return
    match = models.Q(pk__in=[])
    for facility_id in {order.facility_id for order, _ in orders}:
        mine = [order for order, _ in orders if order.facility_id == facility_id]
        accessions = {o.accession_number for o in mine if o.accession_number}
        uids = {o.study_instance_uid for o in mine if o.study_instance_uid}
        match |= models.Q(facility_id=facility_id) & (
            models.Q(accession_number__in=accessions) | models.Q(study_instance_uid__in=uids)
        )
    studies = list(Study.objects.filter(match).order_by("pk"))
    if not studies:
        return
    for order, is_stroke in orders:
        here = [study for study in studies if study.facility_id == order.facility_id]
        candidates = [
            (study, OrderMatch.ACCESSION)
            for study in here
            if order.accession_number
            and study.accession_number == order.accession_number
            and _accession_issuers_agree(order.accession_issuer, study.accession_issuer)
        ]
        if order.study_instance_uid:
            seen = {study.pk for study, _ in candidates}
            candidates += [
                (study, OrderMatch.STUDY_UID)
                for study in here
                if study.study_instance_uid == order.study_instance_uid
                and study.order_id in (None, order.pk)
                and study.pk not in seen
            ]
        for study, how in candidates:
            study_order_link(study, order, how=how, is_stroke=is_stroke)


def study_order_link(study: Study, order: Order, *, how: str, is_stroke: bool) -> list[str]:
    """Give ``study`` its ``order``: the order's patient, priority and stroke flag, ``how`` it was
    matched (kept from the first match), and the accession when the images had none. Routing
    re-runs after commit when what it depends on changed; returns the fields that changed."""
    became_stroke = is_stroke and not study.is_stroke
    # Already announced: complete, or a stroke (announced at its first image) with images.
    announced = study.status == StudyStatus.COMPLETE or (study.is_stroke and study.first_received_at)
    fields = {"order": order, "patient": order.patient, "priority": order.priority, "is_stroke": is_stroke}
    if study.order_id != order.pk:
        fields["order_match"] = how
    # The ORU echoes the study's accession (OBR-18), which the EMR matches its order by: images with
    # none take the order's; by hand, the order's replaces what the images said (why they did not match).
    takes_accession = (how == OrderMatch.STUDY_UID and not study.accession_number) or how == OrderMatch.MANUAL
    if takes_accession and study.accession_number != order.accession_number and _accession_free(order):
        fields["accession_number"] = order.accession_number
    changed = [k for k, v in fields.items() if getattr(study, k) != v]
    for name in changed:
        setattr(study, name, fields[name])
    if changed:
        study.save(update_fields=[*changed, "updated_at"])
    if became_stroke and study.status == StudyStatus.RECEIVING:
        _announce(study_routable, study.pk)
    elif announced and ("priority" in changed or how == OrderMatch.MANUAL):
        # An order change (ORC XO) of the priority, or an order matched by hand to a study already
        # routed without it: routing re-runs so the class, clock and deadline follow the order.
        _announce(study_routable, study.pk)
    if "priority" in changed:
        _ai_results_reweigh(study)
    return changed


def study_order_unlink(
    study: Study, *, patient_id: int | None, accession: str, priority: str, is_stroke: bool
) -> list[str]:
    """Take the order away from ``study`` (a match by hand undone, worklist.order_match): it goes
    back to what its images alone said — ``patient_id``, ``accession``, ``priority``, ``is_stroke``
    as they were before the match — and is routed again after commit, so its class, clock and SLA
    deadline follow the images and the catalogue, not the order. Returns the fields that changed."""
    patient = Patient.objects.filter(pk=patient_id).first() if patient_id else None
    while patient is not None and patient.merged_into_id:  # merged since: the survivor is the person
        patient = patient.merged_into
    # Routed already: images complete, or a stroke announced at its first image (as study_order_link).
    announced = study.status == StudyStatus.COMPLETE or (study.is_stroke and study.first_received_at)
    taken = (
        Study.objects.filter(facility_id=study.facility_id, accession_number=accession)
        .exclude(pk=study.pk)
        .exists()
    )
    fields: dict[str, object] = {
        "order": None,
        "order_match": OrderMatch.NONE,
        "patient": patient,
        "priority": priority,
        "is_stroke": is_stroke,
        # the images' own accession, unless another study took it meanwhile (unique per facility):
        # then none, as ingest does for a duplicate accession
        "accession_number": "" if taken else accession,
    }
    changed = [k for k, v in fields.items() if getattr(study, k) != v]
    for name in changed:
        setattr(study, name, fields[name])
    if changed:
        study.save(update_fields=[*changed, "updated_at"])
    if announced:
        _announce(study_routable, study.pk)
    if "priority" in changed:
        _ai_results_reweigh(study)  # an AI raise holds without the order too
    return changed


def _ai_results_reweigh(study: Study) -> None:
    """AI triage rules only ever raise (#18): the class an order sets is weighed again against the
    study's AI results after commit, so an order that comes after them cannot undo their raise. The
    rules' receiver is idempotent: a result whose raise still holds changes nothing."""
    for result_id in study.ai_results.values_list("pk", flat=True):
        transaction.on_commit(
            lambda result_id=result_id: ai_result_recorded.send(sender=AiResult, result_id=result_id),
            robust=True,
        )


def _accession_free(order: Order) -> bool:
    return not Study.objects.filter(facility=order.facility, accession_number=order.accession_number).exists()


def _order_cancel(facility: Facility, facts: OrderFacts, absent: KnownAbsent | None = None) -> OrderOutcome:
    order = _order_lookup(facility, facts, absent)
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
    # of a prior still being retrieved (hidden): its decode check waits for the retrieval's end
    # (``prior_studies_display_check``), so the check does not take the CPU the retrieval needs
    prior_retrieving: bool = False


def instance_stored(
    *,
    facility: Facility,
    header: InstanceHeader,
    stored: StoredFile,
    received_at: datetime,
    cache: IndexCache | None = None,
    before_commit: Callable[[], object] | None = None,
    made_by=None,
    derived: bool = False,
    display_check: bool = True,
) -> InstanceRecorded:
    """Index one stored instance: study, series and instance rows, counters, order matching.
    Idempotent on SOP Instance UID. A stroke study is announced routable at its first instance.
    ``before_commit`` runs inside the transaction, last: if it raises, nothing is indexed (ingest
    passes the wait for the file's fsync).

    ``made_by`` (a user): an object that reader made from the study's images in the viewer (a measurement SR,
    a key-object selection; docs/viewer.md). It is kept with the study, in its own series, but it
    is not an arrival of images: the study must exist already, and its image counts, modalities,
    last arrival (the quiet period), status and routing are left as they are. ``derived``: the same
    for an object no reader made (an AI result's SR/SEG/KOS: ``imaging.ai``). ``display_check``
    False: the caller enqueues the image's decode check itself (the SCP's group commit gathers them)."""
    cache = cache if cache is not None else IndexCache()
    for attempt in range(3):
        try:
            with transaction.atomic():
                recorded = _instance_index(facility, header, stored, received_at, cache, made_by, derived)
                if before_commit is not None:
                    before_commit()
                if display_check and not derived and made_by is None and not recorded.prior_retrieving:
                    _display_check_enqueue(recorded.instance_id)
                return recorded
        except IntegrityError:
            # another association created the same study/series/instance at the same moment
            cache.studies.clear()
            cache.series.clear()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def instance_index_in_group(
    *,
    facility: Facility,
    header: InstanceHeader,
    stored: StoredFile,
    received_at: datetime,
    cache: IndexCache,
) -> InstanceRecorded:
    """``instance_stored``'s indexing of an image, in the caller's transaction: a group commit
    (``imaging.group_commit``) commits several, waits for their files and queues their decode
    checks as one task; if anything in the group fails, each is stored alone by ``instance_stored``."""
    return _instance_index(facility, header, stored, received_at, cache, None, False)


def _instance_index(
    facility, header: InstanceHeader, stored: StoredFile, received_at, cache: IndexCache, made_by, derived
) -> InstanceRecorded:
    recorded = _instance_rows(facility, header, stored, received_at, cache, made_by, derived)
    study = cache.studies.get(header.study_instance_uid)
    if study is not None and study.prior_state == PriorState.RETRIEVING:
        return dataclasses.replace(recorded, prior_retrieving=True)
    return recorded


def _instance_rows(
    facility, header: InstanceHeader, stored: StoredFile, received_at, cache: IndexCache, made_by, derived
) -> InstanceRecorded:
    derived = derived or made_by is not None
    study = cache.studies.get(header.study_instance_uid)
    study_created = False
    if study is None and derived:
        study = Study.objects.filter(study_instance_uid=header.study_instance_uid, facility=facility).first()
        if study is None:
            if not Study.objects.filter(study_instance_uid=header.study_instance_uid).exists():
                raise StudyNotYetStored(f"Study {header.study_instance_uid} is not stored here yet")
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
            return _instance_existing(header, series_id, study.pk, stored)
        return InstanceRecorded(instance_id, study.pk, True, False)
    if Instance.objects.filter(sop_instance_uid=header.sop_instance_uid).exists():
        return _instance_existing(header, series_id, study.pk, stored)
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


def _instance_existing(
    header: InstanceHeader, series_id: int, study_id: int, stored: StoredFile
) -> InstanceRecorded:
    """A resent instance: idempotent when it is the same series, a conflict otherwise. Its file is
    rewritten at the same path in this transaction, so the row takes the new file's transfer syntax,
    size and key here too: file and row change together or not at all (a row still saying
    Explicit VR while the file is RLE would have frames served as raw pixels)."""
    pk, stored_series_id = (
        Instance.objects.filter(sop_instance_uid=header.sop_instance_uid).values_list("pk", "series_id").get()
    )
    if stored_series_id != series_id:
        raise IngestConflict(f"SOP Instance {header.sop_instance_uid} is already stored in another series")
    Instance.objects.filter(pk=pk).update(
        transfer_syntax_uid=header.transfer_syntax_uid,
        storage_path=stored.relative_path,
        storage_key_id=stored.key_id,
        size_bytes=stored.size_bytes,
        display_problem="",  # a new file: whether it displays is found anew
        display_problem_at=None,
        display_checked_at=None,
    )
    return InstanceRecorded(pk, study_id, False, False)


def _display_check_enqueue(instance_id: int) -> None:
    """The image's decode check runs after commit in a worker, so the C-STORE answer never waits for it
    (the embedded topology runs tasks inline, after the commit all the same)."""
    if not getattr(settings, "READROOM_DECODE_CHECK", True):
        return
    from imaging.tasks import instance_display_check_task  # the task module imports this one

    transaction.on_commit(lambda: instance_display_check_task.delay(instance_id), robust=True)


def instances_display_check_publish(instance_ids: list[int]) -> None:
    """One decode-check task for images committed already (the SCP's group commit gathers them)."""
    if not instance_ids or not getattr(settings, "READROOM_DECODE_CHECK", True):
        return
    from imaging.tasks import instances_display_check_task

    instances_display_check_task.delay(instance_ids)


# A prior's images are checked in tasks of this many, so each worker child takes a share (the SCP's
# group commit gathers at most 32 images per task the same way).
PRIOR_CHECK_BATCH = 32


def prior_studies_display_check(*, study_ids: list[int]) -> int:
    """Queue, after commit, the decode checks of the still unchecked images of priors whose
    retrieval has ended (``InstanceRecorded.prior_retrieving``: they were not queued on arrival, so
    a retrieval's CPU goes to the images arriving, not to checking ones nobody can open yet).
    Returns how many images were queued; a lost publish is re-queued by the 10-min sweep."""
    if not study_ids or not getattr(settings, "READROOM_DECODE_CHECK", True):
        return 0
    from imaging.tasks import instances_display_check_task  # the task module imports this one

    unchecked = list(
        Instance.objects.filter(series__study_id__in=study_ids, display_checked_at__isnull=True)
        .order_by("series__study_id", "series_id", "instance_number", "pk")
        .values_list("pk", flat=True)
    )
    for start in range(0, len(unchecked), PRIOR_CHECK_BATCH):
        batch = unchecked[start : start + PRIOR_CHECK_BATCH]
        transaction.on_commit(lambda batch=batch: instances_display_check_task.delay(batch), robust=True)
    return len(unchecked)


def instances_display_check(*, instance_ids: list[int]) -> list[str]:
    """``instance_display_check`` for each (idempotent the same way: one checked already is skipped).
    One that raises is logged and left unchecked; it does not stop the others' checks."""
    problems = []
    for instance_id in instance_ids:
        try:
            problems.append(instance_display_check(instance_id=instance_id))
        except Exception:
            log.exception("decode check of instance %s failed", instance_id)
            problems.append("")
    return problems


# The decode check is queued on commit: a worker killed, a broker restarted or a publish that failed
# loses the task, and the image would then never be checked before someone opens it. The sweep
# re-queues what is still unchecked this long after it arrived; only within the window, so an image
# whose check raises every time is not retried forever (it stays unchecked, and the first render
# still finds and records its problem).
DISPLAY_CHECK_LOST_AFTER = timedelta(minutes=10)
DISPLAY_CHECK_SWEEP_WINDOW = timedelta(hours=24)
DISPLAY_CHECK_SWEEP_BATCH = 200


def instances_display_check_lost_requeue(*, now: datetime | None = None, limit: int = 2000) -> int:
    """Queue the decode check again for images whose check never ran (its task was lost): received
    ``DISPLAY_CHECK_LOST_AFTER`` to ``DISPLAY_CHECK_SWEEP_WINDOW`` ago, at most ``limit``, in tasks of
    ``DISPLAY_CHECK_SWEEP_BATCH``. Harmless when a task is only late: the check is idempotent (an
    image checked meanwhile is skipped). Returns how many images were queued."""
    if not getattr(settings, "READROOM_DECODE_CHECK", True):
        return 0
    from imaging.tasks import instances_display_check_task  # the task module imports this one

    now = now or timezone.now()
    lost = list(
        Instance.objects.filter(
            display_checked_at__isnull=True,
            received_at__lt=now - DISPLAY_CHECK_LOST_AFTER,
            received_at__gte=now - DISPLAY_CHECK_SWEEP_WINDOW,
        )
        .order_by("received_at")
        .values_list("pk", flat=True)[:limit]
    )
    for start in range(0, len(lost), DISPLAY_CHECK_SWEEP_BATCH):
        instances_display_check_task.delay(lost[start : start + DISPLAY_CHECK_SWEEP_BATCH])
    if lost:
        log.warning("decode check re-queued for %d image(s) whose check never ran", len(lost))
    return len(lost)


def instance_display_check(*, instance_id: int) -> str:
    """Decode the first and last frame of a stored image with the renderer's own path and flag the
    first problem found, before anyone opens it (issue #12). Returns the problem, or "" (none, not an
    image, or checked already: a redelivered task decodes nothing)."""
    # numpy/PIL: only where images are decoded
    from imaging.rendering import UnsupportedImage, display_problem_find, part10_dataset

    instance = Instance.objects.filter(pk=instance_id, display_checked_at__isnull=True).first()
    if instance is None:
        return ""
    dataset = None  # one parse for the check and the metadata side-car made from the same bytes
    try:
        part10 = encrypted_read(instance.storage_path)
    except StorageError as exc:
        part10, problem = None, f"the stored file cannot be read: {exc}"
    else:
        try:
            dataset = part10_dataset(part10)
        except UnsupportedImage as exc:
            problem = exc.message
        else:
            problem = display_problem_find(instance, part10, dataset)
    # only the file that was checked: a re-send meanwhile cleared the mark and queued its own check
    Instance.objects.filter(
        pk=instance_id, display_checked_at__isnull=True, storage_path=instance.storage_path
    ).update(display_checked_at=timezone.now())
    if problem:
        instance_display_problem_record(instance_id=instance_id, reason=problem)
    if part10 is not None:
        instance_display_checked.send(sender=Instance, instance=instance, part10=part10, dataset=dataset)
    return problem


def instance_display_problem_record(*, instance_id: int, reason: str) -> bool:
    """An accepted image proved undecodable when it was rendered or decoded: keep why, so the study
    and the operations page say it (docs/viewer.md). Compare-and-set: the first reason is kept (a
    viewer asks for the same broken frame many times). True when this call recorded it."""
    recorded = Instance.objects.filter(pk=instance_id, display_problem="").update(
        display_problem=reason[:300], display_problem_at=timezone.now()
    )
    if recorded:
        log.warning("instance %s cannot be displayed: %s", instance_id, reason)
    return bool(recorded)


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
    prior = _prior_expected(facility, header.study_instance_uid)
    if prior is not None:
        return _prior_study_create(facility, header, received_at, prior), True
    accession = header.accession_number
    if accession and Study.objects.filter(facility=facility, accession_number=accession).exists():
        log.warning(
            "accession %s already has another study at %s; indexing without it", accession, facility.code
        )
        accession = ""
    order, how = order_for_images(facility, header, accession)
    if order is not None and how != OrderMatch.ACCESSION:
        # the study takes the order's accession (the images had none, or the RIS's other number)
        accession = order.accession_number if _accession_free(order) else ""
    texts = (header.study_description, header.series_description)
    is_stroke = bool(order and order.priority == PriorityClass.STROKE) or stroke_detected(texts=texts)
    issuer = header.issuer_of_accession if accession and accession == header.accession_number else ""
    if order is not None and accession and accession == order.accession_number:
        issuer = order.accession_issuer or issuer  # the study took the order's number
    study = Study.objects.create(
        facility=facility,
        study_instance_uid=header.study_instance_uid,
        accession_number=accession,
        accession_issuer=issuer,
        order=order,
        order_match=how,
        patient=order.patient if order else _patient_from_header(facility, header),
        modalities=header.modality,
        description=header.study_description,
        body_part=header.body_part,
        study_datetime=_aware(header.study_datetime, facility),
        dicom_study_id=header.study_id,
        referring_physician_name=header.referring_physician_name,
        priority=PriorityClass.STROKE if is_stroke else (order.priority if order else PriorityClass.ROUTINE),
        is_stroke=is_stroke,
        first_received_at=received_at,
        last_received_at=received_at,
    )
    return study, True


def _accession_issuers_agree(order_issuer: str, images_issuer: str) -> bool:
    """An accession is a number *and* the authority that issued it (IPC-1.2; DICOM (0008,0051)).
    Most modalities send no issuer, and many RIS none in IPC-1: only two issuers that are both
    there and differ say that the images' number is another authority's, not this order's."""
    return not (order_issuer and images_issuer) or order_issuer.casefold() == images_issuer.casefold()


def order_for_images(facility: Facility, header: InstanceHeader, accession: str) -> tuple[Order | None, str]:
    """The order a new study's images answer, and how it was found (docs/orders.md): the
    accession at the facility, when its issuers agree (``_accession_issuers_agree``); then the
    order that carries this Study Instance UID; then the
    facility's fallback (the images' accession is the order's filler or placer number, as
    ``Facility.hl7_accession_fallback`` says the RIS numbers them)."""
    orders = Order.objects.select_related("patient").filter(facility=facility)
    order = orders.filter(accession_number=accession).first() if accession else None
    if order is not None and _accession_issuers_agree(order.accession_issuer, header.issuer_of_accession):
        return order, OrderMatch.ACCESSION
    if order := orders.filter(study_instance_uid=header.study_instance_uid).first():
        return order, OrderMatch.STUDY_UID
    number_field = {"filler": "filler_order_number", "placer": "placer_order_number"}.get(
        facility.hl7_accession_fallback
    )
    order = (
        orders.filter(**{number_field: header.accession_number}).first()
        if header.accession_number and number_field
        else None
    )
    if order is not None:
        return order, OrderMatch.FALLBACK
    return None, OrderMatch.NONE


def _prior_expected(facility: Facility, study_instance_uid: str) -> PriorFetch | None:
    """A study we asked a prior source for (docs/priors.md): it arrives as that patient's prior."""
    return (
        PriorFetch.objects.select_related("retrieval")
        .filter(
            retrieval__facility=facility,
            study_instance_uid=study_instance_uid,
            status__in=(RetrievalStatus.PENDING, RetrievalStatus.RUNNING),
        )
        .first()
    )


def _prior_study_create(facility: Facility, header: InstanceHeader, received_at, prior: PriorFetch) -> Study:
    """A prior: the patient we asked about (matched on MRN and issuer, never the header's name), no
    order, no accession of ours (its accession is the PACS's), never routed (no announcement)."""
    return Study.objects.create(
        facility=facility,
        study_instance_uid=header.study_instance_uid,
        patient_id=prior.retrieval.patient_id,
        modalities=header.modality,
        description=header.study_description,
        body_part=header.body_part,
        study_datetime=_aware(header.study_datetime, facility),
        dicom_study_id=header.study_id,
        referring_physician_name=header.referring_physician_name,
        # read long ago at the hospital: closed, so no worklist, sweep or router ever takes it up
        status=StudyStatus.FINAL,
        completed_at=received_at,
        prior_state=PriorState.RETRIEVING,
        first_received_at=received_at,
        last_received_at=received_at,
    )


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
    # the longest-quiet first, so their announcements (and routes) go out in the order the exams ended
    candidates = (
        Study.objects.filter(status=StudyStatus.RECEIVING, last_received_at__isnull=False)
        .select_related("facility")
        .order_by("last_received_at", "pk")
    )
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
    # robust: in a batch (HL7, a group commit of images) one raising receiver must not skip the
    # announcements of the other studies (the unrouted sweep is the backstop, 30 s late)
    transaction.on_commit(lambda: signal.send(sender=Study, study_id=study_id), robust=True)
