"""The live channel of every page (issue 14, docs/alerts.md): which alerts a user has waiting, and
their acknowledgement.

The events themselves travel on the worklist socket (``worklist.consumers``, the groups
``worklist.broadcast`` already addresses: the eligible readers, operations, the director), so the
audiences are exactly the worklist's. What a page needs besides the stream is the *resync*: when its
socket (re)opens, the alerts still waiting for this user — computed here from committed state with the
same rules the events follow:

* a **reader**: every unclaimed code stroke on their own worklist (eligible now, so never a reader
  licensed elsewhere), at its latest reader step (``stroke_alert``, then ``stroke_readers`` at 2 min);
* **operations**: an unclaimed code stroke once its 2-minute step (``stroke_readers``) or 5-minute step
  (``stroke_director``) is recorded;
* the **medical director**: an unclaimed code stroke once its 5-minute step is recorded.

An alert waits until the user acknowledges *its current step*: a later step rings again."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q

from accounts.roles import Role, has_role
from facilities.models import PriorityClass
from imaging.models import Study
from radiology.statements import SLOT_ID, SLOT_IDS, Statement
from worklist.broadcast import study_event_payload
from worklist.models import AlertAcknowledgement, EscalationStep, StudyEscalation
from worklist.notices import NOTICE_KEY_PREFIX, NoticeNotFound, user_notice_acknowledge
from worklist.selectors import worklist_for

READER_STEPS = (EscalationStep.STROKE_ALERT, EscalationStep.STROKE_READERS)
OPERATIONS_STEPS = (EscalationStep.STROKE_READERS, EscalationStep.STROKE_DIRECTOR)
DIRECTOR_STEPS = (EscalationStep.STROKE_DIRECTOR,)
STEP_ORDER = [
    EscalationStep.STROKE_ALERT,
    EscalationStep.STROKE_READERS,
    EscalationStep.STROKE_DIRECTOR,
]
STROKE_Q = Q(is_stroke=True) | Q(priority=PriorityClass.STROKE)


# What a locked screen is told (docs/alerts.md "Screen lock"): that a code stroke waits — facility,
# priority class, minutes (from the step's time) — and whether someone claimed it; never the patient,
# the procedure or the accession. The same projection answers /live/pending/ and the locked socket.
LOCKED_STUDY_FIELDS = ("id", "facility", "facility_name", "priority", "is_stroke", "claimed_by")
LOCKED_NOTICE_FIELDS = ("key", "kind", "title", "facility", "at")
# operations' own alarms, by what may show on a lock (the error text, the accession may not)
_LOCKED_OPERATIONS_FIELDS = {
    "report.critical_overdue": ("report", "facility", "deadline"),
}


def locked_study(study: dict) -> dict:
    return {key: study[key] for key in LOCKED_STUDY_FIELDS if key in study}


def locked_notice(notice: dict) -> dict:
    return {key: notice[key] for key in LOCKED_NOTICE_FIELDS if key in notice}


def locked_event(event: dict) -> dict | None:
    """``event`` as the socket of a locked session forwards it: the lock's fields only (no row, no
    ``was``, nothing with the patient or the exam in it), or None when a lock has nothing to show of
    it. What was held back is fetched again when the page unlocks (its resync)."""
    kind = event.get("type")
    if not isinstance(kind, str):
        return None
    if kind == "alert":
        return {
            "type": kind,
            "step": event.get("step"),
            "at": event.get("at"),
            "study": locked_study(event["study"]),
        }
    if kind == "notice":
        return {"type": kind, "notice": locked_notice(event.get("notice") or {})}
    if kind.startswith("study.") and isinstance(event.get("study"), dict):
        told = {"type": kind, "study": locked_study(event["study"])}
        escalation = event.get("escalation")
        if isinstance(escalation, dict):
            told["escalation"] = {key: escalation.get(key) for key in ("step", "at")}
        return told
    if kind in _LOCKED_OPERATIONS_FIELDS:
        return {"type": kind, **{key: event.get(key) for key in _LOCKED_OPERATIONS_FIELDS[kind]}}
    return None


class AlertNotFound(Exception):
    """The user has no such alert (not in its audience, or nothing to acknowledge)."""


def steps_for(user) -> tuple[str, ...]:
    """The code-stroke steps that alert this user, by role."""
    steps: set[str] = set()
    if has_role(user, Role.RADIOLOGIST):
        steps.update(READER_STEPS)
    if user.is_superuser or has_role(user, Role.OPERATIONS):
        steps.update(OPERATIONS_STEPS)
    if has_role(user, Role.MEDICAL_DIRECTOR):
        steps.update(DIRECTOR_STEPS)
    return tuple(step for step in STEP_ORDER if step in steps)


def _audience_studies(user, at: datetime):
    """Unclaimed open code strokes this user may be alerted to: their worklist — for a reader the
    studies they are eligible for now, for operations and the director every study on the lists."""
    return worklist_for(user, at=at).filter(STROKE_Q, worklist_claimed_by__isnull=True)


def alerts_pending(user, *, at: datetime) -> list[dict]:
    """The alerts waiting for ``user`` now: ``{"kind", "step", "label", "at", "study": {...}}``,
    the oldest first. The study part is the socket's payload (workflow metadata, no patient name)."""
    steps = steps_for(user)
    if not steps:
        return []
    studies = {s.pk: s for s in _audience_studies(user, at).select_related("assignment__claimed_by")[:50]}
    recorded = StudyEscalation.objects.filter(study_id__in=studies, step__in=steps).order_by("at")
    latest: dict[int, StudyEscalation] = {}
    for escalation in recorded:
        known = latest.get(escalation.study_id)
        if known is None or STEP_ORDER.index(escalation.step) > STEP_ORDER.index(known.step):
            latest[escalation.study_id] = escalation
    acknowledged = set(
        AlertAcknowledgement.objects.filter(user=user, study_id__in=latest).values_list("study_id", "kind")
    )
    alerts = []
    for study_id, escalation in sorted(latest.items(), key=lambda item: item[1].at):
        if (study_id, escalation.step) in acknowledged:
            continue
        alerts.append(
            {
                "kind": "stroke",
                "step": escalation.step,
                "label": EscalationStep(escalation.step).label,
                "at": escalation.at.isoformat(),
                "study": study_event_payload(studies[study_id]),
            }
        )
    return alerts


def strokes_acknowledged(user, study_ids: list[int]) -> set[int]:
    """Which of these code strokes ``user`` acknowledged (any reader step, on any page: the lock's
    banner, another window, the worklist's own): the server's record, so a worklist raises no banner
    for a stroke its reader already acknowledged elsewhere (docs/alerts.md)."""
    if not study_ids:
        return set()
    return set(_STROKES_ACKNOWLEDGED.flat(user_id=user.pk, study_ids=study_ids))


_STROKES_ACKNOWLEDGED = Statement(
    "worklist.strokes_acknowledged",
    lambda user_id, study_ids: AlertAcknowledgement.objects.filter(
        user_id=user_id, study_id__any_of=study_ids, kind__in=READER_STEPS
    ).values_list("study_id", flat=True),
    user_id=SLOT_ID,
    study_ids=SLOT_IDS,
)


# What a page sends as the step when it knows the stroke but not its step (the worklist's own banner):
# the latest step of the study recorded for the user's audience.
LATEST_STROKE_STEP = "stroke"


def stroke_step_latest(user, study_id: int) -> str:
    """The latest recorded step of a study's stroke clock that alerts ``user`` ("" when none)."""
    escalations = StudyEscalation.objects.filter(study_id=study_id, step__in=steps_for(user))
    recorded = set(escalations.values_list("step", flat=True))
    return max(recorded, key=STEP_ORDER.index, default="")


def alert_acknowledge(user, *, study_id: int, step: str, at: datetime) -> AlertAcknowledgement:
    """Record that ``user`` acknowledged the ``step`` alert of a study. Only an alert of this user's
    audience may be acknowledged: the step must be one that alerts their role and be recorded for the
    study, and a reader must be eligible for the study or hold it (the claim may have come first)."""
    if step == LATEST_STROKE_STEP:
        step = stroke_step_latest(user, study_id)
    if step not in steps_for(user):
        raise AlertNotFound("No such alert for you.")
    if not StudyEscalation.objects.filter(study_id=study_id, step=step).exists():
        raise AlertNotFound("No such alert for you.")
    if not (user.is_superuser or has_role(user, Role.OPERATIONS, Role.MEDICAL_DIRECTOR)):
        held = Study.objects.filter(pk=study_id, worklist_claimed_by=user).exists()
        if not held and not worklist_for(user, at=at).filter(pk=study_id).exists():
            raise AlertNotFound("No such alert for you.")
    return AlertAcknowledgement.objects.create(user=user, study_id=study_id, kind=step, at=at)


# Operations' notices that are not a study's step and not a ``worklist.notices`` row: ``<kind>:<reference>``,
# ``critical_overdue:<report id>``: ``report.critical_overdue`` (reports.services.critical_results_escalate).
# (A dead-lettered result is a UserNotice per operations user: ``NoticeKind.RESULT_DEAD_LETTERED``.)
OPERATIONS_NOTICES = ("critical_overdue",)


def notice_acknowledge(user, *, notice: str, at: datetime) -> AlertAcknowledgement:
    """Record that a user acknowledged a notice (who, when): one addressed to them
    (``worklist.notices``, ``notice:<id>``), or an operations notice, for operations only."""
    if notice.startswith(NOTICE_KEY_PREFIX):
        try:
            return user_notice_acknowledge(user, key=notice, at=at)
        except NoticeNotFound as error:
            raise AlertNotFound(str(error)) from None
    kind, _, ref = notice.partition(":")
    if kind not in OPERATIONS_NOTICES or not ref.isdigit() or len(notice) > 32:
        raise AlertNotFound("No such notice.")
    if not (user.is_superuser or has_role(user, Role.OPERATIONS)):
        raise AlertNotFound("No such notice for you.")
    return AlertAcknowledgement.objects.create(user=user, study=None, kind=notice, at=at)
