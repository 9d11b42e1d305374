"""Events to the live screens, sent after the transaction commits (DESIGN.md §7): a screen must
never show what a rollback undid.

A study event goes to its **audience**: operations, the reader who holds it, and every reader who is
eligible for it at that moment (``credentialing.eligibility.eligible_readers``) — so a reader licensed
elsewhere never hears of a study at all, and a study claimed by one reader leaves the others' lists.
Events carry workflow metadata only (no patient name or MRN): the page re-fetches its rows through
the permission-checked worklist, the event only says what changed.

Contract (DESIGN.md §5): ``{"type": "study.added" | "study.updated" | "study.claimed" |
"study.released" | "study.escalated" | "study.finalized" | "study.cancelled", "study": {...}}``
plus, for some kinds, more keys (an escalation's step)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from worklist.groups import OPERATIONS_GROUP, user_group

logger = logging.getLogger(__name__)


async def _groups_send(groups: list[str], event: dict) -> None:
    # One coroutine for all the groups: one event loop (and, with channels-redis, one connection)
    # per event rather than per group.
    layer = get_channel_layer()
    message = {"type": "worklist.event", "event": event}
    for group in groups:
        await layer.group_send(group, message)


def groups_send_now(groups: Iterable[str], event: dict) -> None:
    """Send at once; only for callers that already run after commit."""
    async_to_sync(_groups_send)(list(dict.fromkeys(groups)), event)


def group_event_send(group: str, event: dict) -> None:
    """Queue ``event`` for every socket in ``group`` once the current transaction commits."""
    transaction.on_commit(lambda: groups_send_now([group], event))


def operations_event_send(event: dict) -> None:
    group_event_send(OPERATIONS_GROUP, event)


# --- study events --------------------------------------------------------------------------------


def study_event_payload(study) -> dict:
    """What a screen needs to place a study (workflow metadata, never the patient's identity)."""
    assignment = getattr(study, "assignment", None) if _has_assignment(study) else None
    holder = assignment.claimed_by if assignment and assignment.claimed_by_id else None
    deadline = assignment.sla_deadline if assignment else None
    return {
        "id": study.pk,
        "facility": study.facility.code,
        "facility_name": study.facility.name,
        "accession": study.accession_number,
        "procedure": (study.order.procedure_text if study.order_id else "") or study.description,
        "modalities": study.modalities,
        "priority": study.priority,
        "is_stroke": study.is_stroke or study.priority == "STROKE",
        "subspecialty": study.subspecialty.code if study.subspecialty_id else None,
        "status": study.status,
        "sla_deadline": deadline.isoformat() if deadline else None,
        "claimed_by": holder.pk if holder else None,
        "claimed_by_name": str(holder) if holder else None,
    }


def _has_assignment(study) -> bool:
    from worklist.models import StudyAssignment

    try:
        study.assignment  # noqa: B018 — a reverse one-to-one raises when absent
    except StudyAssignment.DoesNotExist:
        return False
    return True


def study_audience(study, at) -> list[str]:
    """The groups that hear about ``study``: operations, its holder, every reader eligible now."""
    from credentialing.eligibility import eligible_readers

    groups = [OPERATIONS_GROUP]
    if _has_assignment(study) and study.assignment.claimed_by_id:
        groups.append(user_group(study.assignment.claimed_by_id))
    groups += [user_group(reader.pk) for reader in eligible_readers(study, at)]
    return list(dict.fromkeys(groups))


def study_event_broadcast(
    kind: str, study_id: int, *, extra: dict | None = None, also: Iterable[str] = ()
) -> None:
    """After commit, tell ``study.<kind>`` to the study's audience (and to the groups in ``also``,
    e.g. a reader who just released it and is no longer its holder). The audience is computed after
    commit, from committed state, so it reflects the change that caused the event."""
    also = list(also)

    def send() -> None:
        from imaging.models import Study

        study = (
            Study.objects.select_related(
                "facility", "subspecialty", "order", "assignment", "assignment__claimed_by"
            )
            .filter(pk=study_id)
            .first()
        )
        if study is None:
            return
        event = {"type": f"study.{kind}", "study": study_event_payload(study), **(extra or {})}
        groups_send_now(study_audience(study, timezone.now()) + also, event)

    # robust: a screen that cannot be told must not turn a committed claim into an error response
    transaction.on_commit(send, robust=True)
