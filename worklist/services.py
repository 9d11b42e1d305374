"""Routing and claims: the writes of the worklist (DESIGN.md §6).

* ``study_route`` classifies a study from the procedure catalogue when ingest says it is routable
  (``imaging.signals.study_routable``), records ``routed_at`` and a *routed* event.
* ``study_claim`` / ``study_release``: a claim is exclusive. Two readers pressing "claim" in the same
  millisecond must not both get the study, so the claim is a compare-and-set in the database
  (``UPDATE … WHERE claimed_by IS NULL``), never read-then-write in Python: under PostgreSQL's READ
  COMMITTED the second UPDATE waits for the first one's row lock and then re-checks the WHERE on the
  committed row, finds it claimed and changes nothing. Whoever changed one row won.

Screens hear about a change only after the transaction commits (``worklist.broadcast``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from credentialing.eligibility import Assessment, assess, eligible_readers
from facilities.models import PriorityClass
from imaging.models import OPEN_STUDY_STATUSES, Study
from imaging.selectors import studies_announced_unrouted
from worklist.broadcast import Before, StudyChange, study_changes_broadcast, study_event_broadcast
from worklist.catalogue import CatalogueMatch, catalogue_match
from worklist.clock import clock_start, sla_deadline
from worklist.escalation import escalation_change, escalation_readers, stroke_alert_fire
from worklist.models import StudyAssignment, StudyEvent, StudyEventKind
from worklist.tat import study_milestone_record

logger = logging.getLogger(__name__)

# Most urgent first, as PriorityClass is declared: a protocol flag may raise a priority, never lower it.
_URGENCY = {value: index for index, value in enumerate(PriorityClass.values)}


def _more_urgent(candidate: str, current: str) -> bool:
    return _URGENCY.get(candidate, len(_URGENCY)) < _URGENCY.get(current, len(_URGENCY))


# --- routing -------------------------------------------------------------------------------------


def _priority_for(study: Study, match: CatalogueMatch) -> str:
    priority = study.priority
    # A stroke/trauma protocol procedure (CTA head/neck …) is an activation only when it was ordered
    # as an emergency; an elective CTA for an aneurysm follow-up must not ring every neuro screen.
    emergency = not _more_urgent(PriorityClass.ASAP, priority)
    # No order to say otherwise: the catalogue's default class — but never below what ingest already
    # knew (a stroke flagged from DICOM stays a stroke).
    if study.order_id is None and match.priority and _more_urgent(match.priority, priority):
        priority = match.priority
    for flag, protocol in (
        (match.stroke_protocol, PriorityClass.STROKE),
        (match.trauma_protocol, PriorityClass.TRAUMA),
    ):
        if flag and emergency and _more_urgent(protocol, priority):
            priority = protocol
    return priority


@transaction.atomic
def study_route(*, study_id: int, at: datetime | None = None) -> StudyAssignment | None:
    """Classify the study from the catalogue (order's procedure code and text, then the DICOM study
    description), keep ``routed_at`` from the first routing, and write a *routed* event whenever the
    classification changes. Idempotent: routing an unchanged study again writes nothing."""
    at = at or timezone.now()
    # Locked: ingest may announce the same study twice (stroke's first image, then images complete).
    study = (
        Study.objects.select_for_update(of=("self",))
        .select_related("order", "facility")
        .filter(pk=study_id)
        .first()
    )
    if study is None or study.status not in OPEN_STUDY_STATUSES:  # cancelled, or read already
        return None
    order = study.order
    match = catalogue_match(
        study.facility_id,
        order.procedure_code if order else "",
        [order.procedure_text if order else "", study.description],
    )
    assignment, _ = StudyAssignment.objects.get_or_create(study=study)
    before = _worklist_place(study, assignment, match)
    changes: dict[str, object] = {}
    if match is not None:
        priority = _priority_for(study, match)
        for name, value in (("subspecialty_id", match.subspecialty_id), ("priority", priority)):
            if getattr(study, name) != value:
                changes[name] = {"from": getattr(study, name), "to": value}
                setattr(study, name, value)
        if changes:
            study.save(update_fields=[n.removesuffix("_id") for n in changes] + ["updated_at"])
    because = match.because if match else "no catalogue rule matches; left unclassified (general worklist)"
    told: list[StudyChange] = []  # what the screens are told after commit
    first_routing = assignment.routed_at is None
    clock = (clock_start(study), sla_deadline(study))
    clock_changed = (assignment.clock_started_at, assignment.sla_deadline) != clock
    assignment.clock_started_at, assignment.sla_deadline = clock
    classified = first_routing or changes or assignment.because != because
    if classified:
        assignment.routed_at = assignment.routed_at or at
        assignment.rule_id = match.rule_id if match else None
        assignment.because = because[:300]
        assignment.rvu = match.rvu if match else None
    if classified or clock_changed:
        assignment.save()
    # A re-route that only moved the clock (an order change of the priority) is an update too.
    if classified or (clock_changed and not first_routing):
        StudyEvent.objects.create(
            study=study,
            kind=StudyEventKind.ROUTED,
            at=at,
            detail={
                "subspecialty": match.subspecialty_code if match else None,
                "priority": study.priority,
                "rule": match.rule_id if match else None,
                "because": because,
                "changes": changes,
                "rerouted": not first_routing,
                "sla_deadline": assignment.sla_deadline,
            },
        )
        # first routing: it appears on the eligible readers' lists; a re-route may move it to others
        told.append(StudyChange("added" if first_routing else "updated", before=before))
    # a code stroke alerts at once, the first time it is routed: told with the routing (one audience)
    alert = stroke_alert_fire(study=study, at=at, announce=False)
    eligible = None
    if alert is not None:
        told.append(escalation_change(alert))
        # its record's readers were computed just now, after this routing's changes: the audience
        eligible = escalation_readers(alert)
    if told:
        study_changes_broadcast(study.pk, told, eligible=eligible)
    if first_routing:
        from worklist.assignment import study_push_on_route  # push facilities: give it to a reader

        study_push_on_route(study_id=study.pk, at=at)
    return assignment


def _worklist_place(study: Study, assignment: StudyAssignment, match) -> Before:
    """Where the study stood before this routing, for the pages' counts; who could read it then
    only when the new classification moves it to another subspecialty (those readers drop it)."""
    if assignment.routed_at is None:
        return Before(listed=False)
    subspecialty = study.subspecialty.code if study.subspecialty_id else ""
    moves = match is not None and match.subspecialty_id != study.subspecialty_id
    readers = frozenset(u.pk for u in eligible_readers(study, timezone.now())) if moves else None
    holder = assignment.claimed_by_id
    return Before(holder_id=holder, priority=study.priority, subspecialty=subspecialty, readers=readers)


def on_study_cancelled(sender, study_id: int, **kwargs) -> None:
    """Receiver of ``imaging.signals.study_cancelled``: the study leaves every screen (ingest has
    already decided it was not read; a read study is never announced as cancelled)."""
    try:
        StudyEvent.objects.create(study_id=study_id, kind=StudyEventKind.CANCELLED, at=timezone.now())
        study_event_broadcast("cancelled", study_id)
    except Exception:
        logger.exception("announcing the cancellation of study %s failed", study_id)


def on_study_routable(sender, study_id: int, **kwargs) -> None:
    """Receiver of ``imaging.signals.study_routable`` (sent after ingest's commit). A failure here must
    not reach ingest, whose transaction is already committed: log it; the study stays unrouted until
    ``studies_unrouted_route`` (every 30 s) routes it."""
    try:
        study_route(study_id=study_id)
    except Exception:
        logger.exception("routing study %s failed", study_id)


# How long after its announcement a study may stay unrouted before the backstop routes it: the normal
# path takes well under a second, so this is only ever a failed routing or a lost announcement.
UNROUTED_GRACE_SECONDS = 30


def studies_unrouted_route(*, at: datetime | None = None) -> list[int]:
    """The backstop of ``on_study_routable``: an announcement is an on-commit callback, so a routing
    that raised (a database error, a lock timeout) or a process killed between ingest's commit and
    its callback leaves a study complete — or a code stroke receiving — on no worklist, and nobody
    alerted. Route each such study again (idempotent, under the study's row lock, so a routing
    running meanwhile is harmless) and log it: it means an alert went out late. The SLA clock keeps
    its start (``clock_start`` is the images' and order's time, not this routing's)."""
    at = at or timezone.now()
    routed: list[int] = []
    for study_id in studies_announced_unrouted(before=at - timedelta(seconds=UNROUTED_GRACE_SECONDS)):
        logger.warning("study %s was announced but never routed: routing it now", study_id)
        try:
            if study_route(study_id=study_id, at=at) is not None:
                routed.append(study_id)
        except Exception:  # the next sweep tries again; one study never stops the others
            logger.exception("routing study %s failed again", study_id)
    return routed


# --- claims --------------------------------------------------------------------------------------


class ClaimError(Exception):
    pass


class NotEligible(ClaimError):
    def __init__(self, assessment: Assessment):
        super().__init__("; ".join(assessment.messages))
        self.assessment = assessment


class ClaimTaken(ClaimError):
    """Someone else holds the study (``holder``), or — for a release — the caller does not."""

    def __init__(self, holder):
        super().__init__(f"claimed by {holder}" if holder else "not claimed")
        self.holder = holder


class NotClaimable(ClaimError):
    pass


@dataclass(frozen=True)
class Claim:
    study_id: int
    claimed_by: object | None
    claimed_at: datetime | None


def _holder(study_id: int):
    assignment = StudyAssignment.objects.select_related("claimed_by").filter(study_id=study_id).first()
    return assignment.claimed_by if assignment else None


def study_claim(*, study_id: int, user, at: datetime) -> Claim:
    """Give ``user`` the study exclusively. Raises ``NotEligible`` (with the reasons), ``ClaimTaken``
    (someone else holds it) or ``NotClaimable`` (cancelled). Claiming a study one already holds is a
    no-op that returns the existing claim."""
    study = Study.objects.select_related("facility", "subspecialty").get(pk=study_id)
    if study.status not in OPEN_STUDY_STATUSES:
        raise NotClaimable(f"the study is {study.get_status_display().lower()}")
    assessment = assess(user, study, at)
    if not assessment.eligible:
        raise NotEligible(assessment)
    with transaction.atomic():
        # A study claimed before routing finished still needs its row; get_or_create survives two
        # creators (the loser's INSERT fails inside a savepoint and it reads the winner's row).
        StudyAssignment.objects.get_or_create(study_id=study_id)
        # The compare-and-set. Never "read claimed_by, then save": two readers would both see NULL.
        won = StudyAssignment.objects.filter(study_id=study_id, claimed_by__isnull=True).update(
            claimed_by=user, claimed_at=at, last_activity_at=at
        )
        if not won:
            assignment = StudyAssignment.objects.select_related("claimed_by").get(study_id=study_id)
            if assignment.claimed_by_id == user.pk:
                return Claim(study_id, user, assignment.claimed_at)
            raise ClaimTaken(assignment.claimed_by)
        StudyEvent.objects.create(study_id=study_id, kind=StudyEventKind.CLAIMED, actor=user, at=at)
        study_milestone_record(study_id=study_id, milestone="first_claimed", at=at)
        study_event_broadcast("claimed", study_id)
    return Claim(study_id, user, at)


def study_release(*, study_id: int, user, at: datetime | None = None) -> Claim:
    """Give the study back to the worklist. Only its holder may; otherwise ``ClaimTaken`` with the
    actual holder (or None when nobody holds it). Reassignment by operations comes separately."""
    at = at or timezone.now()
    with transaction.atomic():
        # Compare-and-set again: a release must not undo a claim someone else made meanwhile.
        released = StudyAssignment.objects.filter(study_id=study_id, claimed_by=user).update(
            claimed_by=None, claimed_at=None, last_activity_at=None
        )
        if not released:
            raise ClaimTaken(_holder(study_id))
        StudyEvent.objects.create(study_id=study_id, kind=StudyEventKind.RELEASED, actor=user, at=at)
        # the releasing reader may no longer be eligible (shift ended): tell their screen anyway
        study_event_broadcast("released", study_id, before=Before(holder_id=user.pk))
    return Claim(study_id, None, None)
