"""Matching by hand a study that waits for its order (issue #13, docs/orders.md).

Images that no order answered (an accession typed wrong at the modality, a RIS that never sent the
Study Instance UID) are read without the order's priority, history and ordering provider, and their
report cannot go back to the order. After the facility's ``orderless_wait_minutes`` they show on the
operations worklist; an operator who found the order matches it there with one click and a reason.

The match is ``imaging.services.study_order_link`` with ``OrderMatch.MANUAL`` — the same write
ingest makes, so the study takes the order's patient, priority and accession and is routed again —
plus an ``order_matched`` study event (who, when, because) and the study's audit row under the
operator's name. Only the operations desk may do it, and only with an open order of the study's own
facility: a wrong match would send one hospital's report to another's patient.

A match made by mistake is undone with ``study_order_unmatch`` (with a reason, until a report on the
study is signed): the study goes back to what its images alone said — the ``before`` its
``order_matched`` event kept — its claim is given back, a draft keeps the reader's words, and it is
routed again and waits for its order once more."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from accounts.audit import audit_as
from accounts.roles import Role, has_role
from facilities.models import PriorityClass
from imaging.models import OPEN_STUDY_STATUSES, Order, OrderMatch, Study, StudyStatus
from imaging.selectors import MATCHABLE_ORDER_STATUSES, studies_matched_by_hand, studies_visible_to
from imaging.services import study_order_link, study_order_unlink
from worklist.broadcast import Before, study_event_broadcast
from worklist.models import NoticeKind, StudyAssignment, StudyEvent, StudyEventKind
from worklist.notices import study_line, user_notice_send
from worklist.signals import study_order_unmatched


class MatchRefused(Exception):
    """The match cannot be made; the message says why (shown to the operator)."""


class MatchNotPermitted(MatchRefused):
    """The user is not on the operations desk (403)."""


class MatchStudyMissing(MatchRefused):
    """No such study, or one the user may not see (404 in the REST API)."""


class MatchConflict(MatchRefused):
    """The study already has its order, or the order its study: someone matched first (409 in the
    REST API; the page says why with 400)."""


class UnmatchSigned(MatchConflict):
    """A report on the study is signed (preliminary or final): its ORU went to the EMR under the
    order, so the match stands; a correction is an addendum, or the RIS's own merge (409)."""


def may_match_orders(user) -> bool:
    # the interface analysts' desk, as for reassignment: a director reads the page but does not edit
    return user.is_superuser or has_role(user, Role.OPERATIONS)


# The open matches by hand the desk shows with an "Undo" button: the newest (a mistake is usually
# seen within the hour); the desk's facility filter narrows them, and REST undoes any study's.
MATCHES_SHOWN = 20


def matches_by_hand(user, *, facility: str = "", limit: int = MATCHES_SHOWN) -> list[Study]:
    """The open studies matched by hand, most recently changed first, each with ``matched`` (its
    ``order_matched`` event: who, when, why). Two queries."""
    studies = list(studies_matched_by_hand(user, facility=facility)[:limit])
    events = (
        StudyEvent.objects.filter(study__in=studies, kind=StudyEventKind.ORDER_MATCHED)
        .select_related("actor")
        .order_by("at", "pk")
    )
    latest = {event.study_id: event for event in events}  # ordered by time: the last one wins
    for study in studies:
        study.matched = latest.get(study.pk)
    return studies


def study_order_match(*, study_id: int, order_id: int, actor, reason: str, at: datetime) -> Study:
    """Give the waiting study ``study_id`` the open order ``order_id`` of its facility, because
    ``reason``. Raises MatchNotPermitted for anyone but operations, MatchRefused otherwise."""
    if not may_match_orders(actor):
        raise MatchNotPermitted("Matching a study to its order is for the operations desk.")
    reason = (reason or "").strip()
    if not reason:
        raise MatchRefused("Give a reason for the match (kept in the study's history).")
    with transaction.atomic(), audit_as(actor):
        # Locked, then checked: two operators matching the same study at once — the second sees the
        # first one's order and is refused, instead of silently replacing it.
        study = (
            studies_visible_to(actor)
            .select_for_update(of=("self",))
            .select_related("facility")
            .filter(pk=study_id)
            .first()
        )
        if study is None:
            raise MatchStudyMissing("No such study.")
        order = Order.objects.select_related("patient").filter(pk=order_id).first()
        _refusal_check(study, order)
        before = {
            "priority": study.priority,
            "accession": study.accession_number,
            "patient": study.patient_id,
            "is_stroke": study.is_stroke,
        }
        study_order_link(
            study,
            order,
            how=OrderMatch.MANUAL,
            is_stroke=study.is_stroke or order.priority == PriorityClass.STROKE,
        )
        StudyEvent.objects.create(
            study=study,
            kind=StudyEventKind.ORDER_MATCHED,
            actor=actor,
            at=at,
            detail={
                "order": order.pk,
                "accession": order.accession_number,
                "how": OrderMatch.MANUAL,
                "reason": reason,
                "before": before,
                "priority": study.priority,
            },
        )
        study_event_broadcast("updated", study.pk)  # the waiting row goes; screens refetch after commit
    return study


def _refusal_check(study: Study, order: Order | None) -> None:
    if study.order_id is not None:
        raise MatchConflict(f"The study already has its order ({study.order.accession_number}).")
    if study.status not in OPEN_STUDY_STATUSES:
        raise MatchRefused(f"The study is {study.get_status_display().lower()}.")
    if order is None:
        raise MatchRefused("No such order.")
    if order.facility_id != study.facility_id:
        raise MatchRefused(
            "That order belongs to another facility: a study takes only its own facility's orders."
        )
    if order.status not in MATCHABLE_ORDER_STATUSES:
        raise MatchRefused(f"The order is {order.get_status_display().lower()}.")
    if order.studies.exists():
        raise MatchConflict(f"Order {order.accession_number} already has its study.")


REASON_MAX_LENGTH = 300  # as the match's reason (the page's field, the REST body)


def study_order_unmatch(*, study_id: int, actor, reason: str, at: datetime) -> StudyEvent:
    """Undo the match by hand of study ``study_id``, because ``reason``: the study loses its order
    and takes back what its images alone said (patient, accession, priority, stroke flag: the
    ``before`` of its ``order_matched`` event), its holder's claim is released (the patient and the
    priority they were reading under changed), and it is routed again after commit.

    Refusals: MatchStudyMissing for a study the user may not see (404: another facility's, for a
    facility admin), MatchNotPermitted for anyone but operations (403), MatchConflict when it has no
    order any more (someone undid it first), UnmatchSigned when a report on it is signed (409),
    MatchRefused otherwise (no reason; a match not made by hand; a cancelled study)."""
    reason = (reason or "").strip()
    with transaction.atomic(), audit_as(actor):
        # Locked like the match: an unmatch and a match of the same study run one after the other.
        study = (
            studies_visible_to(actor)
            .select_for_update(of=("self",))
            .select_related("facility", "order")
            .filter(pk=study_id)
            .first()
        )
        if study is None:
            raise MatchStudyMissing("No such study.")
        if not may_match_orders(actor):
            raise MatchNotPermitted("Undoing an order match is for the operations desk.")
        if not reason:
            raise MatchRefused("Give a reason for undoing the match (kept in the study's history).")
        if len(reason) > REASON_MAX_LENGTH:
            raise MatchRefused(f"The reason is too long (at most {REASON_MAX_LENGTH} characters).")
        order = study.order
        matched = _unmatch_check(study)
        before = matched.detail.get("before", {})
        had = {"priority": study.priority, "accession": study.accession_number, "patient": study.patient_id}
        study_order_unlink(
            study,
            patient_id=before.get("patient"),
            accession=before.get("accession", ""),
            priority=before.get("priority", PriorityClass.ROUTINE),
            # events from before is_stroke was kept: a stroke class was the stroke flag
            is_stroke=before.get("is_stroke", before.get("priority") == PriorityClass.STROKE),
        )
        # Reports lock the study's report here: signed (preliminary or final) refuses and rolls back.
        drafts = [
            result
            for _, result in study_order_unmatched.send(
                sender=Study, study_id=study.pk, order_id=order.pk, actor=actor
            )
            if result
        ]
        released = _claim_give_back(study, order=order, actor=actor, at=at)
        event = StudyEvent.objects.create(
            study=study,
            kind=StudyEventKind.ORDER_UNMATCHED,
            actor=actor,
            at=at,
            detail={
                "order": order.pk,
                "accession": order.accession_number,
                "reason": reason,
                "matched_by": matched.actor_id,
                "had": had,
                "priority": study.priority,
                "accession_now": study.accession_number,
                "patient": study.patient_id,
                "claim_released": released,
                "draft": drafts[0] if drafts else None,
            },
        )
        study_event_broadcast("updated", study.pk)  # back on the waiting list; screens refetch
    return event


def _unmatch_check(study: Study) -> StudyEvent:
    """The ``order_matched`` event of the match to undo, or a refusal."""
    if study.status == StudyStatus.FINAL:
        raise UnmatchSigned("The study's report is final: the match stands (correct it with an addendum).")
    if study.order_id is None:
        raise MatchConflict("The study has no order (the match was undone already).")
    if study.status not in OPEN_STUDY_STATUSES:
        raise MatchRefused(f"The study is {study.get_status_display().lower()}.")
    matched = (
        StudyEvent.objects.filter(study=study, kind=StudyEventKind.ORDER_MATCHED)
        .order_by("-at", "-pk")
        .first()
    )
    if study.order_match != OrderMatch.MANUAL or matched is None:
        # The hospital's own keys (accession, Study UID, fallback) made it: undoing it here would
        # last until the next image re-matched it. The fix belongs at the RIS or the modality.
        raise MatchRefused(
            f"The study was matched by {study.get_order_match_display().lower()}, not by hand: "
            "correct the order or the images at the hospital."
        )
    return matched


def _claim_give_back(study: Study, *, order: Order, actor, at: datetime) -> int | None:
    """Release the holder's claim, if any: they were reading under the order's patient, history and
    priority. Returns the holder's id. The row is locked, so a claim made meanwhile is seen."""
    assignment = StudyAssignment.objects.select_for_update().filter(study=study).first()
    holder = assignment.claimed_by_id if assignment else None
    if holder is None:
        return None
    StudyAssignment.objects.filter(pk=assignment.pk).update(
        claimed_by=None, claimed_at=None, last_activity_at=None
    )
    StudyEvent.objects.create(
        study=study,
        kind=StudyEventKind.RELEASED,
        actor=actor,
        at=at,
        detail={"because": "order match undone", "holder": holder},
    )
    study_event_broadcast("released", study.pk, before=Before(holder_id=holder))
    user_notice_send(
        user_id=holder,
        kind=NoticeKind.CLAIM_TAKEN_OVER,
        at=at,
        study=study,
        text=f"{study_line(study)} — back on the worklist: not order {order.accession_number} (operations)",
    )
    return holder
