"""Matching by hand a study that waits for its order (issue #13, docs/orders.md).

Images that no order answered (an accession typed wrong at the modality, a RIS that never sent the
Study Instance UID) are read without the order's priority, history and ordering provider, and their
report cannot go back to the order. After the facility's ``orderless_wait_minutes`` they show on the
operations worklist; an operator who found the order matches it there with one click and a reason.

The match is ``imaging.services.study_order_link`` with ``OrderMatch.MANUAL`` — the same write
ingest makes, so the study takes the order's patient, priority and accession and is routed again —
plus an ``order_matched`` study event (who, when, because) and the study's audit row under the
operator's name. Only the operations desk may do it, and only with an open order of the study's own
facility: a wrong match would send one hospital's report to another's patient."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from accounts.audit import audit_as
from accounts.roles import Role, has_role
from facilities.models import PriorityClass
from imaging.models import OPEN_STUDY_STATUSES, Order, OrderMatch, Study
from imaging.selectors import MATCHABLE_ORDER_STATUSES, studies_visible_to
from imaging.services import study_order_link
from worklist.broadcast import study_event_broadcast
from worklist.models import StudyEvent, StudyEventKind


class MatchRefused(Exception):
    """The match cannot be made; the message says why (shown to the operator)."""


class MatchNotPermitted(MatchRefused):
    """The user is not on the operations desk (403)."""


class MatchStudyMissing(MatchRefused):
    """No such study, or one the user may not see (404 in the REST API)."""


class MatchConflict(MatchRefused):
    """The study already has its order, or the order its study: someone matched first (409 in the
    REST API; the page says why with 400)."""


def may_match_orders(user) -> bool:
    # the interface analysts' desk, as for reassignment: a director reads the page but does not edit
    return user.is_superuser or has_role(user, Role.OPERATIONS)


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
