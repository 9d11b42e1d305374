"""Assignment beyond the reader's own claim (issue 4, "Assignment"): push routing, the timeout of an
abandoned claim, and reassignment by operations.

* **Push** (``Facility.routing_mode == push``): when a study is routed for the first time it is given
  to the best eligible reader on shift. ``push_pick`` is a pure function over ``PushCandidate`` facts:
  the facility's core team first (``FacilityPrivilege.core_team``), then a reader who already holds
  the same patient's other open studies, then the lowest current RVU load; a reader at their RVU cap
  (``RadiologistProfile.rvu_load_cap``, else ``READROOM_PUSH_RVU_CAP``) is skipped unless the study is
  a stroke or trauma, which must not wait for anyone's cap. The write is the same compare-and-set as
  a claim (``WHERE claimed_by IS NULL``): a reader who claimed it first keeps it. Nobody fits → the
  study stays on the pull worklist and a *not_assigned* event says why.
* **Timeout**: a claim idle (no ``study_activity_touch`` from the viewer or report editor) longer than
  the facility's ``claim_timeout_minutes`` is released by ``claims_timeout_sweep`` — compare-and-set on
  the holder *and* the ``last_activity_at`` it read, so a reader's fresh activity wins the race. At
  a push facility the released study is then pushed again, to the best eligible reader who has not
  already let it time out.
* **Reassignment** (operations, with a reason): to an eligible reader or back to the pool,
  compare-and-set against the holder the operator saw.

Every change is a ``StudyEvent``; screens hear of it after commit (``study_event_broadcast``)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce
from django.urls import reverse

from accounts.roles import Role, has_role
from credentialing.eligibility import assess, eligible_readers
from credentialing.models import GRANTED_PRIVILEGE_STATUSES, FacilityPrivilege, RadiologistProfile
from facilities.models import Facility, PriorityClass, RoutingMode
from imaging.models import OPEN_STUDY_STATUSES, Study
from worklist.broadcast import Before, study_event_broadcast
from worklist.models import NoticeKind, StudyAssignment, StudyEvent, StudyEventKind
from worklist.notices import operations_notice_send, study_line, user_notice_send
from worklist.services import Claim, ClaimError, ClaimTaken, NotClaimable, NotEligible

logger = logging.getLogger(__name__)

CAP_BYPASS_PRIORITIES = (PriorityClass.STROKE, PriorityClass.TRAUMA)


def default_rvu_cap() -> Decimal:
    return Decimal(str(getattr(settings, "READROOM_PUSH_RVU_CAP", 20)))


def reader_loads(user_ids) -> dict[int, tuple[Decimal, int]]:
    """Current load per reader: (sum of RVUs, number of studies) they hold and have not finished."""
    rows = (
        # a held study counts towards its reader's load until it is read (or cancelled)
        StudyAssignment.objects.filter(
            claimed_by_id__in=list(user_ids), study__status__in=OPEN_STUDY_STATUSES
        )
        .values("claimed_by_id")
        .annotate(rvu=Sum("rvu"), studies=Count("id"))
    )
    return {r["claimed_by_id"]: (r["rvu"] or Decimal(0), r["studies"]) for r in rows}


# --- push: the pick (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class PushCandidate:
    user_id: int
    name: str
    core_team: bool
    same_patient: int  # the patient's other open studies this reader holds
    load: Decimal  # RVUs held now
    cap: Decimal


@dataclass(frozen=True)
class PushPick:
    user_id: int | None
    because: str


def push_pick(candidates: Sequence[PushCandidate], *, bypass_cap: bool) -> PushPick:
    """The reader a pushed study goes to, and why — or nobody, and why. Candidates are the eligible
    readers on shift. Order: core team, then same patient, then lowest load (then the lower id, so
    the answer is deterministic)."""
    if not candidates:
        return PushPick(None, "no eligible reader on shift")
    fits = [c for c in candidates if bypass_cap or c.load < c.cap]
    if not fits:
        loads = ", ".join(f"{c.name} {c.load:g}/{c.cap:g}" for c in candidates)
        return PushPick(None, f"every eligible reader on shift is at their RVU cap ({loads})")
    best = min(fits, key=lambda c: (not c.core_team, c.same_patient == 0, c.load, c.user_id))
    return PushPick(best.user_id, _because(best, fits, bypass_cap))


def _because(best: PushCandidate, fits: Sequence[PushCandidate], bypass_cap: bool) -> str:
    reasons = []
    if best.core_team:
        reasons.append("facility core team")
    if best.same_patient:
        reasons.append(f"holds {best.same_patient} other open study(ies) of this patient")
    reasons.append(f"RVU load {best.load:g}" + ("" if bypass_cap else f" of cap {best.cap:g}"))
    if len(fits) > 1 and not best.core_team and not best.same_patient:
        reasons[-1] = "lowest " + reasons[-1]
    if bypass_cap:
        reasons.append("stroke/trauma: load caps bypassed")
    return f"pushed to {best.name}: " + "; ".join(reasons)


# --- push: facts and the write ----------------------------------------------------------------------


def push_candidates(study: Study, readers: Sequence) -> list[PushCandidate]:
    """The facts ``push_pick`` weighs, for the eligible ``readers`` (four queries, however many)."""
    ids = [r.pk for r in readers]
    core = set(
        FacilityPrivilege.objects.filter(
            facility_id=study.facility_id,
            profile__user_id__in=ids,
            core_team=True,
            status__in=GRANTED_PRIVILEGE_STATUSES,
        ).values_list("profile__user_id", flat=True)
    )
    same_patient: dict[int, int] = {}
    if study.patient_id:
        same_patient = dict(
            StudyAssignment.objects.filter(claimed_by_id__in=ids, study__patient_id=study.patient_id)
            .exclude(study_id=study.pk)
            .filter(study__status__in=OPEN_STUDY_STATUSES)
            .values_list("claimed_by_id")
            .annotate(n=Count("id"))
        )
    loads = reader_loads(ids)
    caps = dict(RadiologistProfile.objects.filter(user_id__in=ids).values_list("user_id", "rvu_load_cap"))
    default_cap = default_rvu_cap()
    return [
        PushCandidate(
            r.pk,
            str(r),
            r.pk in core,
            same_patient.get(r.pk, 0),
            loads.get(r.pk, (Decimal(0), 0))[0],
            caps.get(r.pk) if caps.get(r.pk) is not None else default_cap,
        )
        for r in readers
    ]


def bypasses_cap(study: Study) -> bool:
    return study.is_stroke or study.priority in CAP_BYPASS_PRIORITIES


def study_push_assign(*, study_id: int, at: datetime, passed_over: Collection[int] = ()) -> PushPick | None:
    """Give a study of a push facility to the best eligible reader on shift — newly routed, or
    released by the claim timeout (then not to ``passed_over``, the readers who let it sit). Returns the
    pick (``user_id`` None: left on the pull worklist, with a *not_assigned* event saying why), or
    None when the facility pulls or someone claimed the study first."""
    study = Study.objects.select_related("facility", "subspecialty").get(pk=study_id)
    if study.facility.routing_mode != RoutingMode.PUSH or study.status not in OPEN_STUDY_STATUSES:
        return None
    eligible = eligible_readers(study, at)
    readers = [reader for reader in eligible if reader.pk not in passed_over]
    pick = push_pick(push_candidates(study, readers), bypass_cap=bypasses_cap(study))
    if not readers and eligible:
        pick = PushPick(None, "every eligible reader on shift has let it time out")
    with transaction.atomic():
        if pick.user_id is None:
            StudyEvent.objects.create(
                study=study, kind=StudyEventKind.NOT_ASSIGNED, at=at, detail={"because": pick.because}
            )
            return pick
        StudyAssignment.objects.get_or_create(study=study)
        # The claim's compare-and-set: a reader who pressed "claim" first keeps the study.
        won = StudyAssignment.objects.filter(study=study, claimed_by__isnull=True).update(
            claimed_by_id=pick.user_id, claimed_at=at, last_activity_at=at
        )
        if not won:
            return None
        StudyEvent.objects.create(
            study=study,
            kind=StudyEventKind.ASSIGNED,
            at=at,
            detail={"to": pick.user_id, "because": pick.because},
        )
        study_event_broadcast("claimed", study.pk, extra={"assigned": True})
        # the reader it was pushed to, on whatever page they are (their own group only)
        user_notice_send(
            user_id=pick.user_id, kind=NoticeKind.STUDY_ASSIGNED, at=at, study=study, url=_open_url(study)
        )
    return pick


def _open_url(study: Study) -> str:
    return reverse("imaging:open", args=[study.pk])


def study_push_on_route(*, study_id: int, at: datetime, passed_over: Collection[int] = ()) -> None:
    """Hook for ``study_route`` (first routing only) and the claim timeout. Inside the caller's
    transaction, but in a savepoint: a failure here leaves the study routed (or released) and on the
    pull worklist rather than undoing the caller's change."""
    try:
        with transaction.atomic():
            study_push_assign(study_id=study_id, at=at, passed_over=passed_over)
    except Exception:
        logger.exception("push assignment of study %s failed; it stays on the pull worklist", study_id)


# --- activity and the claim timeout ----------------------------------------------------------------


def study_activity_touch(*, study_id: int, user, at: datetime) -> bool:
    """The holder is working on the study (viewer opened, report edited): push its timeout back.
    Only the holder's activity counts; returns whether the caller holds the study."""
    return bool(
        StudyAssignment.objects.filter(study_id=study_id, claimed_by=user).update(last_activity_at=at)
    )


def claims_timeout_sweep(*, at: datetime) -> list[int]:
    """Release every claim idle longer than its facility's ``claim_timeout_minutes``; returns the study
    ids released. Safe under several workers and against a reader's activity at the same moment: each
    release is a compare-and-set on the holder and the ``last_activity_at`` that was read."""
    released = []
    for minutes in Facility.objects.values_list("claim_timeout_minutes", flat=True).distinct():
        idle = (
            StudyAssignment.objects.filter(
                claimed_by__isnull=False, study__facility__claim_timeout_minutes=minutes
            )
            .filter(study__status__in=OPEN_STUDY_STATUSES)
            .annotate(idle_since=Coalesce("last_activity_at", "claimed_at"))
            .filter(idle_since__lt=at - timedelta(minutes=minutes))
            .values_list("pk", "study_id", "claimed_by_id", "last_activity_at", "idle_since")
        )
        for pk, study_id, holder_id, last_activity_at, idle_since in idle:
            if _claim_time_out(pk, study_id, holder_id, last_activity_at, idle_since, minutes, at):
                released.append(study_id)
    return released


@transaction.atomic
def _claim_time_out(pk, study_id, holder_id, last_activity_at, idle_since, minutes, at) -> bool:
    seen = (
        Q(last_activity_at__isnull=True) if last_activity_at is None else Q(last_activity_at=last_activity_at)
    )
    changed = StudyAssignment.objects.filter(seen, pk=pk, claimed_by_id=holder_id).update(
        claimed_by=None, claimed_at=None, last_activity_at=None
    )
    if not changed:
        return False  # the reader touched it (or released it) since we looked: their claim stands
    event = StudyEvent.objects.create(
        study_id=study_id,
        kind=StudyEventKind.TIMED_OUT,
        at=at,
        detail={"from": holder_id, "idle_since": idle_since, "timeout_minutes": minutes},
    )
    # the former holder is no longer in the audience (not the holder, maybe off shift): tell them too
    study_event_broadcast("released", study_id, extra={"timed_out": True}, before=Before(holder_id=holder_id))
    _timed_out_notice_send(event, holder_id, minutes, at)
    # A push facility gives its studies to readers: a timed-out one goes to the next best reader —
    # never back to one who already let it sit (no ping-pong between two idle readers); when all
    # have, it stays on the pull worklist with the reason, and its SLA escalation carries on.
    timed_out_readers = {
        event.detail["from"]
        for event in StudyEvent.objects.filter(study_id=study_id, kind=StudyEventKind.TIMED_OUT)
    }
    study_push_on_route(study_id=study_id, at=at, passed_over=timed_out_readers)
    return True


def _timed_out_notice_send(event: StudyEvent, holder_id: int, minutes: int, at: datetime) -> None:
    """Operations hear of every claim that timed out (a reader who walked away from a study), on
    their pages until each acknowledges it."""
    from django.contrib.auth import get_user_model

    study = Study.objects.select_related("facility", "order").get(pk=event.study_id)
    holder = get_user_model().objects.filter(pk=holder_id).first()
    operations_notice_send(
        kind=NoticeKind.CLAIM_TIMED_OUT,
        at=at,
        study=study,
        text=f"{study_line(study)} — released after {minutes} min idle ({holder or 'a reader'})",
        about=f"claim_timed_out:{event.pk}",
    )


# --- reassignment by operations ----------------------------------------------------------------------


class NotPermitted(ClaimError):
    pass


class InvalidReassignment(ClaimError):
    pass


UNSEEN = object()  # the operator did not say whom they saw holding the study


def may_reassign(user) -> bool:
    return user.is_superuser or has_role(user, Role.OPERATIONS)


def study_reassign(
    *, study_id: int, actor, to, reason: str, at: datetime, expected_from: int | object | None = UNSEEN
) -> Claim:
    """Give the study to ``to`` (a user, who must be eligible now) or, with ``to=None``, back to the
    pool — operations only, with a reason. ``expected_from`` is the holder's id the operator saw
    (None: unclaimed); if the study changed hands since, ``ClaimTaken`` names the actual holder."""
    if not may_reassign(actor):
        raise NotPermitted("Reassignment is for the operations desk.")
    reason = (reason or "").strip()
    if not reason:
        raise InvalidReassignment("Give a reason for the reassignment.")
    study = Study.objects.select_related("facility", "subspecialty").get(pk=study_id)
    if study.status not in OPEN_STUDY_STATUSES:
        raise NotClaimable(f"the study is {study.get_status_display().lower()}")
    if to is not None:
        assessment = assess(to, study, at)
        if not assessment.eligible:
            raise NotEligible(assessment)
    with transaction.atomic():
        assignment, _ = StudyAssignment.objects.get_or_create(study=study)
        seen = assignment.claimed_by_id if expected_from is UNSEEN else expected_from
        target = to.pk if to is not None else None
        if seen == target:
            raise InvalidReassignment(
                "The study is already unclaimed." if target is None else f"{to} already holds the study."
            )
        holder_was = Q(claimed_by__isnull=True) if seen is None else Q(claimed_by_id=seen)
        changed = StudyAssignment.objects.filter(holder_was, study=study).update(
            claimed_by=to, claimed_at=at if to else None, last_activity_at=at if to else None
        )
        if not changed:
            raise ClaimTaken(StudyAssignment.objects.select_related("claimed_by").get(study=study).claimed_by)
        StudyEvent.objects.create(
            study=study,
            kind=StudyEventKind.REASSIGNED,
            actor=actor,
            at=at,
            detail={"from": seen, "to": target, "reason": reason},
        )
        # the reason stays in the event row (operations' business); screens learn only who holds it
        study_event_broadcast(
            "claimed" if to else "released",
            study.pk,
            extra={"reassigned": {"from": seen, "to": target}},
            before=Before(holder_id=seen),
        )
        # each reader whose work changed hands hears it on their own pages, nobody else
        if seen is not None:
            where = f"now with {to}" if to is not None else "back on the worklist"
            user_notice_send(
                user_id=seen,
                kind=NoticeKind.CLAIM_TAKEN_OVER,
                at=at,
                study=study,
                text=f"{study_line(study)} — {where} (operations)",
            )
        if to is not None:
            user_notice_send(
                user_id=to.pk,
                kind=NoticeKind.STUDY_ASSIGNED,
                at=at,
                study=study,
                text=f"{study_line(study)} — assigned by operations",
                url=_open_url(study),
            )
    return Claim(study.pk, to, at if to else None)
