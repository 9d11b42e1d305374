"""SLA clocks and escalation (DESIGN.md §4): every step is a row with its timestamp, written once.

Steps
-----
* **SLA** — every open (not cancelled, not final), routed study with a deadline: ``sla_50`` and
  ``sla_80`` at 50 % and 80 % of the window from clock start to deadline, ``sla_breach`` at the
  deadline. Claimed or not: the holder must see the warnings. Told to the study's audience
  (operations, holder, every reader eligible now).
* **Code stroke** — priority STROKE: ``stroke_alert`` at routing (every eligible reader on shift: a
  stroke study is neuro, so its eligible readers are the neuro and general/ER readers); still
  unclaimed ``Facility.stroke_readers_minutes`` (2) after the alert → ``stroke_readers`` (every eligible
  reader + operations); still unclaimed ``Facility.stroke_director_minutes`` (5) after the alert →
  ``stroke_director``: the medical director(s) (socket group ``worklist.director``) + operations, and
  the notifier (``worklist.notifier``: e-mail and the facility's webhook, each delivery a row).

Once, under any number of workers
---------------------------------
The database decides who acts: a step's row is unique on (study, step) and is inserted in a savepoint;
the worker whose INSERT succeeded writes the event and tells the screens. The others get an
IntegrityError (on PostgreSQL after waiting for the winner's commit) and do nothing.

Timers
------
``escalations_sweep`` (beat every 15 s, the embedded ticker every 5 s) fires every due step. For a
stroke, production also schedules a Celery task at each step's due time (``eta``) once routing has
committed, so the step is on time rather than up to a sweep period late; the timer and the sweep run
the same function, and whichever comes second finds the row. In eager mode (embedded, tests) no timer
is scheduled: eager ``apply_async`` ignores ``eta`` and would run at once, and the sweep is the timer.
A stroke step checks "still unclaimed" with the assignment row locked (``SELECT … FOR UPDATE``), so a
concurrent claim commits either before it (the step is skipped) or after it (the step rightly fired).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

from celery import current_app
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import (
    DateTimeField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    QuerySet,
    Value,
)
from django.utils import timezone

from accounts.roles import Role
from facilities.models import Facility, PriorityClass
from imaging.models import OPEN_STUDY_STATUSES, Study
from worklist.broadcast import StudyChange, study_event_broadcast
from worklist.clock import SLA_CRITICAL_SHARE, SLA_WARNING_SHARE
from worklist.groups import DIRECTOR_GROUP, OPERATIONS_GROUP
from worklist.models import (
    EscalationStep,
    StudyAssignment,
    StudyEscalation,
    StudyEvent,
    StudyEventKind,
)

logger = logging.getLogger(__name__)

# (step, share of the window from clock start to deadline)
SLA_STEPS: tuple[tuple[str, float], ...] = (
    (EscalationStep.SLA_WARNING_50, SLA_WARNING_SHARE),
    (EscalationStep.SLA_WARNING_80, SLA_CRITICAL_SHARE),
    (EscalationStep.SLA_BREACH, 1.0),
)
STROKE_TIMED_STEPS: tuple[str, ...] = (EscalationStep.STROKE_READERS, EscalationStep.STROKE_DIRECTOR)


# --- when each step is due (pure) ----------------------------------------------------------------


def sla_step_due(start: datetime, deadline: datetime, share: float) -> datetime:
    return start + (deadline - start) * share


def stroke_step_due(alert_at: datetime, facility: Facility, step: str) -> datetime:
    minutes = {
        EscalationStep.STROKE_READERS: facility.stroke_readers_minutes,
        EscalationStep.STROKE_DIRECTOR: facility.stroke_director_minutes,
    }[step]
    return alert_at + timedelta(minutes=minutes)


# --- recording a step once -----------------------------------------------------------------------


def _open_assignments() -> QuerySet[StudyAssignment]:
    """Routed studies still to be read (not cancelled, not read)."""
    return StudyAssignment.objects.filter(routed_at__isnull=False, study__status__in=OPEN_STUDY_STATUSES)


def _people(users) -> list[dict]:
    return [{"id": u.pk, "name": str(u)} for u in users]


def _step_insert(
    *, study_id: int, step: str, due_at: datetime, at: datetime, notified: dict
) -> StudyEscalation | None:
    """The row, or None when another worker (or an earlier run) already recorded this step."""
    try:
        # a savepoint: losing the race must not abort the caller's transaction
        with transaction.atomic():
            return StudyEscalation.objects.create(
                study_id=study_id, step=step, due_at=due_at, at=at, notified=notified
            )
    except IntegrityError:
        return None


def _step_record(
    study: Study,
    step: str,
    *,
    due_at: datetime,
    at: datetime,
    notified: dict,
    eligible: frozenset[int] | None = None,
    also: tuple[str, ...] = (),
    announce: bool = True,
) -> StudyEscalation | None:
    """Insert the step; only the inserting worker writes the event and tells the screens (after
    commit). ``announce=False``: the caller tells it with its own change (``escalation_change``).
    ``eligible``: the readers ``notified`` names, so the broadcast tells exactly them and does not
    compute eligibility a second time after commit (a step changes nobody's eligibility)."""
    escalation = _step_insert(study_id=study.pk, step=step, due_at=due_at, at=at, notified=notified)
    if escalation is None:
        return None
    StudyEvent.objects.create(study=study, kind=StudyEventKind.ESCALATED, at=at, detail=_told(escalation))
    if announce:
        change = escalation_change(escalation)
        study_event_broadcast(change.kind, study.pk, extra=change.extra, also=also, eligible=eligible)
    return escalation


def _told(escalation: StudyEscalation) -> dict:
    return {"step": escalation.step, "due_at": escalation.due_at.isoformat(), "at": escalation.at.isoformat()}


def escalation_change(escalation: StudyEscalation) -> StudyChange:
    """The ``study.escalated`` change a recorded step is told as."""
    told = {**_told(escalation), "label": EscalationStep(escalation.step).label}
    return StudyChange("escalated", {"escalation": told})


def escalation_readers(escalation: StudyEscalation) -> frozenset[int]:
    """The ids of the readers a step's record names: its audience, computed once in its transaction."""
    return frozenset(reader["id"] for reader in escalation.notified.get("readers", []))


def _readers_notified(study: Study, at: datetime, groups: list[str]) -> tuple[dict, frozenset[int]]:
    """The step's ``notified`` record and the ids of the readers it names: one eligibility pass
    serves both the record and the step's audience (``_step_record``)."""
    from credentialing.eligibility import eligible_readers

    readers = eligible_readers(study, at)
    return {"readers": _people(readers), "groups": groups}, frozenset(r.pk for r in readers)


# --- SLA steps -----------------------------------------------------------------------------------


def sla_step_fire(*, study_id: int, step: str, at: datetime) -> StudyEscalation | None:
    """Record an SLA step if it is due at ``at`` and not yet recorded; None otherwise."""
    share = dict(SLA_STEPS)[step]
    assignment = (
        _open_assignments()
        .select_related("study__facility", "study__subspecialty", "claimed_by")
        .filter(study_id=study_id, sla_deadline__isnull=False, clock_started_at__isnull=False)
        .first()
    )
    if assignment is None:
        return None
    due = sla_step_due(assignment.clock_started_at, assignment.sla_deadline, share)
    if due > at:
        return None
    groups = [OPERATIONS_GROUP]
    notified, eligible = _readers_notified(assignment.study, at, groups)
    notified["holder"] = _people([assignment.claimed_by])[0] if assignment.claimed_by_id else None
    with transaction.atomic():
        return _step_record(assignment.study, step, due_at=due, at=at, notified=notified, eligible=eligible)


def _sla_steps_due(now: datetime) -> Iterator[tuple[int, str]]:
    """(study, step) pairs due at ``now`` and not recorded. The database narrows to studies past half
    their window (remaining ≤ elapsed) and not yet breached, so long-open and breached studies are not
    re-read every sweep."""
    at = Value(now, output_field=DateTimeField())
    breached = StudyEscalation.objects.filter(study_id=OuterRef("study_id"), step=EscalationStep.SLA_BREACH)
    rows = list(
        _open_assignments()
        .filter(sla_deadline__isnull=False, clock_started_at__isnull=False, clock_started_at__lte=now)
        .alias(
            remaining=ExpressionWrapper(F("sla_deadline") - at, output_field=DurationField()),
            elapsed=ExpressionWrapper(at - F("clock_started_at"), output_field=DurationField()),
        )
        .filter(remaining__lte=F("elapsed"))
        .exclude(Exists(breached))
        .values_list("study_id", "clock_started_at", "sla_deadline")
    )
    recorded = set(
        StudyEscalation.objects.filter(
            study_id__in=[r[0] for r in rows], step__in=[s for s, _ in SLA_STEPS]
        ).values_list("study_id", "step")
    )
    for study_id, start, deadline in rows:
        for step, share in SLA_STEPS:
            if (study_id, step) not in recorded and sla_step_due(start, deadline, share) <= now:
                yield study_id, step


# --- code stroke ---------------------------------------------------------------------------------


def stroke_alert_fire(*, study: Study, at: datetime, announce: bool = True) -> StudyEscalation | None:
    """The immediate alert of a code stroke, once per study. Called by routing inside its transaction
    (so the alert commits with the routing); schedules the exact timers for the later steps after
    commit — before the caller's broadcast, so the next step's timer is not queued behind a fan-out.
    ``announce=False``: the caller tells the step together with its own change (one audience)."""
    if study.priority != PriorityClass.STROKE:
        return None
    if StudyEscalation.objects.filter(study=study, step=EscalationStep.STROKE_ALERT).exists():
        return None  # alerted at an earlier routing: its timers are already set
    notified, _ = _readers_notified(study, at, [OPERATIONS_GROUP])
    step = EscalationStep.STROKE_ALERT
    alert = _step_record(study, step, due_at=at, at=at, notified=notified, announce=False)
    if alert is not None:
        facility = study.facility
        transaction.on_commit(
            lambda: stroke_timers_schedule(study_id=study.pk, alert_at=at, facility=facility),
            robust=True,  # a broker down: the escalation sweep is the timers' backstop
        )
        if announce:
            change = escalation_change(alert)
            study_event_broadcast(change.kind, study.pk, extra=change.extra)
    return alert


def stroke_timers_schedule(*, study_id: int, alert_at: datetime, facility: Facility) -> None:
    """Production: a Celery task at each later step's due time. Eager mode: none (see module doc)."""
    if current_app.conf.task_always_eager:
        return
    from worklist.tasks import stroke_step_fire_task

    for step in STROKE_TIMED_STEPS:
        try:
            stroke_step_fire_task.apply_async((study_id, step), eta=stroke_step_due(alert_at, facility, step))
        except Exception:  # the broker is down: the sweep is the backstop
            logger.exception("scheduling the %s timer of study %s failed", step, study_id)


def _stroke_notified(study: Study, step: str, at: datetime) -> tuple[dict, frozenset[int], tuple[str, ...]]:
    """(``notified``, the eligible readers' ids computed for it, the extra groups)."""
    if step == EscalationStep.STROKE_READERS:
        notified, eligible = _readers_notified(study, at, [OPERATIONS_GROUP])
        return notified, eligible, ()
    # The 5-minute step rings the director and operations; the eligible readers are told too (their
    # rows, and the banner's step). Their set is computed here, in the step's transaction, as for the
    # other steps: the record names them and the broadcast reuses it instead of a second pass after
    # commit (docs/alerts.md "One eligibility pass per step").
    notified, eligible = _readers_notified(study, at, [DIRECTOR_GROUP, OPERATIONS_GROUP])
    User = get_user_model()
    people = User.objects.filter(is_active=True).order_by("username")
    notified["directors"] = _people(people.filter(groups__name=Role.MEDICAL_DIRECTOR.value))
    notified["operations"] = _people(people.filter(groups__name=Role.OPERATIONS.value))
    return notified, eligible, (DIRECTOR_GROUP,)


@transaction.atomic
def stroke_step_fire(*, study_id: int, step: str, at: datetime) -> StudyEscalation | None:
    """Record a later stroke step if the study is still an open, unclaimed code stroke and the step is
    due; None otherwise (a claim before the due time cancels the step)."""
    # Locked: a claim (UPDATE … WHERE claimed_by IS NULL) waits for this transaction, so "unclaimed"
    # stays true until the step has committed.
    assignment = (
        _open_assignments()
        .select_for_update(of=("self",))
        .select_related("study__facility", "study__subspecialty")
        .filter(study_id=study_id, study__priority=PriorityClass.STROKE)
        .first()
    )
    if assignment is None or assignment.claimed_by_id is not None:
        return None
    alert = StudyEscalation.objects.filter(study_id=study_id, step=EscalationStep.STROKE_ALERT).first()
    if alert is None:
        return None
    study = assignment.study
    due = stroke_step_due(alert.at, study.facility, step)
    if due > at:
        return None
    notified, eligible, also = _stroke_notified(study, step, at)
    escalation = _step_record(study, step, due_at=due, at=at, notified=notified, eligible=eligible, also=also)
    if escalation is not None and step == EscalationStep.STROKE_DIRECTOR:
        from worklist.notifier import escalation_deliveries_plan

        escalation_deliveries_plan(escalation=escalation, study=study)
    return escalation


def _stroke_steps_due(now: datetime) -> Iterator[tuple[int, str]]:
    """(study, step) pairs of unclaimed open code strokes whose later steps are due and unrecorded."""
    director_done = StudyEscalation.objects.filter(
        study_id=OuterRef("study_id"), step=EscalationStep.STROKE_DIRECTOR
    )
    alerts = list(
        StudyEscalation.objects.filter(
            step=EscalationStep.STROKE_ALERT,
            study__priority=PriorityClass.STROKE,
            study__assignment__claimed_by__isnull=True,
            study__status__in=OPEN_STUDY_STATUSES,
        )
        .exclude(Exists(director_done))
        .select_related("study__facility")
    )
    recorded = set(
        StudyEscalation.objects.filter(
            study_id__in=[a.study_id for a in alerts], step__in=STROKE_TIMED_STEPS
        ).values_list("study_id", "step")
    )
    for alert in alerts:
        for step in STROKE_TIMED_STEPS:
            if (alert.study_id, step) not in recorded and stroke_step_due(
                alert.at, alert.study.facility, step
            ) <= now:
                yield alert.study_id, step


# --- the sweep -----------------------------------------------------------------------------------


def escalations_sweep(*, now: datetime | None = None) -> list[StudyEscalation]:
    """Fire every due step (SLA and stroke); the periodic backstop of the stroke timers. Safe to run
    from several workers at once: each step is recorded by exactly one of them."""
    now = now or timezone.now()
    fired: list[StudyEscalation] = []
    due = [(stroke_step_fire, pair) for pair in _stroke_steps_due(now)]
    due += [(sla_step_fire, pair) for pair in _sla_steps_due(now)]
    for fire, (study_id, step) in due:
        try:
            escalation = fire(study_id=study_id, step=step, at=now)
        except Exception:  # one bad study must not hold back every other study's escalation
            logger.exception("escalation %s of study %s failed", step, study_id)
            continue
        if escalation is not None:
            fired.append(escalation)
    return fired
