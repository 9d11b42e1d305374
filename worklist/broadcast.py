"""Events to the live screens, sent after the transaction commits (DESIGN.md §7): a screen must
never show what a rollback undid.

A study event goes to its **audience**: operations, the reader who holds it (and the one who held it
just before), and every reader who is eligible for it at that moment
(``credentialing.eligibility.eligible_readers``) — so a reader licensed elsewhere never hears of a
study at all, and a study claimed by one reader leaves the others' lists.

**Push, not pull** (issue 16, docs/worklist-fanout.md): each reader's event carries the change to
*their* list — ``row: {"op": "upsert", "html", "sort", "facts"}`` (the row as their page renders it)
or ``{"op": "remove"}`` — and ``was`` (whether the study was on their list before, with its priority
and facts then), so the page applies it and keeps its counts without asking the server again. The
row is rendered once per distinct shape (the holder's, every other eligible reader's, operations'),
never once per reader: a study held by someone is on nobody else's list, so the only per-reader
difference ("Yours" / Release) is the holder's.

Contract (DESIGN.md §5): ``{"type": "study.added" | "study.updated" | "study.claimed" |
"study.released" | "study.escalated" | "study.finalized" | "study.cancelled", "study": {...}}``
plus ``row`` and ``was`` for worklist pages and, for some kinds, more keys (an escalation's step)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from worklist.groups import OPERATIONS_GROUP, user_group

logger = logging.getLogger(__name__)


async def _messages_send(messages: list[tuple[str, dict]]) -> None:
    # One coroutine for all the groups: one event loop (and, with channels-redis, one connection)
    # per event rather than per group.
    layer = get_channel_layer()
    for group, event in messages:
        await layer.group_send(group, {"type": "worklist.event", "event": event})


def groups_send_now(groups: Iterable[str], event: dict) -> None:
    """Send at once; only for callers that already run after commit."""
    async_to_sync(_messages_send)([(group, event) for group in dict.fromkeys(groups)])


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


@dataclass(frozen=True)
class Before:
    """The study's place on the worklists just before the change: what the pages had counted.
    ``None`` fields mean "as now"; ``readers`` (who was eligible before) only when the change may
    alter it (a re-route to another subspecialty), so the readers it leaves are told to drop it."""

    listed: bool = True
    holder_id: int | None = None
    priority: str | None = None
    subspecialty: str | None = None
    readers: frozenset[int] | None = None


# What each kind of change left behind, when the caller does not say.
_BEFORE_BY_KIND = {"added": Before(listed=False), "claimed": Before(holder_id=None)}


def study_event_broadcast(
    kind: str,
    study_id: int,
    *,
    extra: dict | None = None,
    also: Iterable[str] = (),
    before: Before | None = None,
) -> None:
    """After commit, tell ``study.<kind>`` to the study's audience — each reader the change to their
    own list — and to the groups in ``also`` (e.g. the director's). The audience is computed after
    commit, from committed state, so it reflects the change that caused the event. ``before``: see
    ``Before``; by default the holder is the one of now (escalated, cancelled, finalized)."""
    also = list(also)

    def send() -> None:
        from imaging.models import Study
        from worklist.selectors import WORKLIST_RELATED

        study = Study.objects.select_related(*WORKLIST_RELATED, "assignment__claimed_by").filter(pk=study_id)
        study = study.first()
        if study is None:
            return
        was = before or _BEFORE_BY_KIND.get(kind) or Before(holder_id=study.worklist_claimed_by_id)
        base = {"type": f"study.{kind}", "study": study_event_payload(study), **(extra or {})}
        messages = study_fanout(study, base, was, timezone.now())
        async_to_sync(_messages_send)(messages + [(group, base) for group in dict.fromkeys(also)])

    # robust: a screen that cannot be told must not turn a committed claim into an error response
    transaction.on_commit(send, robust=True)


def study_fanout(study, base: dict, was: Before, at) -> list[tuple[str, dict]]:
    """(group, event) for operations and every reader who hears of the study: each gets the row for
    their own list, rendered once per distinct shape."""
    from credentialing.eligibility import eligible_readers
    from imaging.models import OPEN_STUDY_STATUSES
    from worklist.rows import operations_row_html, reader_row_html, row_decorate, row_facts, row_sort

    eligible = {reader.pk for reader in eligible_readers(study, at)}
    holder = study.worklist_claimed_by_id
    on_list = study.worklist_routed and study.status in OPEN_STUDY_STATUSES
    readers_before = eligible if was.readers is None else was.readers
    facts_before = {
        **row_facts(study),
        "priority": was.priority or study.priority,
        **({"subspecialty": was.subspecialty} if was.subspecialty is not None else {}),
    }

    rendered: dict[str, dict] = {}

    def row(shape: str) -> dict:
        # one rendering per shape: "mine" (the holder's page), "other" (every other eligible reader)
        if shape not in rendered:
            if shape == "gone":
                rendered[shape] = {"op": "remove"}
            else:
                row_decorate(study, viewer_id=holder if shape == "mine" else None, at=at)
                html = operations_row_html(study, _coverage(study, eligible, at)) if shape == "ops" else None
                rendered[shape] = {
                    "op": "upsert",
                    "html": html or reader_row_html(study),
                    "sort": row_sort(study, mine=shape == "mine"),
                    "facts": row_facts(study),
                }
        return rendered[shape]

    messages = [
        (
            OPERATIONS_GROUP,
            {**base, "row": row("ops" if on_list else "gone"), "was": _was(was.listed, facts_before)},
        )
    ]
    for reader in sorted(eligible | {holder, was.holder_id} - {None}):
        now_listed = on_list and (holder == reader or (holder is None and reader in eligible))
        was_listed = was.listed and (
            was.holder_id == reader or (was.holder_id is None and reader in readers_before)
        )
        shape = ("mine" if holder == reader else "other") if now_listed else "gone"
        messages.append(
            (user_group(reader), {**base, "row": row(shape), "was": _was(was_listed, facts_before)})
        )
    # readers it leaves after a re-route (no longer eligible, never its holder): take it off their list
    for reader in sorted((was.readers or frozenset()) - eligible - {holder, was.holder_id}):
        messages.append((user_group(reader), {**base, "row": row("gone"), "was": _was(True, facts_before)}))
    return messages


def _was(listed: bool, facts: dict) -> dict:
    return {"listed": listed, **({"facts": facts} if listed else {})}


def _coverage(study, eligible: set[int], at):
    """The operations row's coverage cell: how many may read it now, and why nobody can when none
    may (the engine over every reader — only then)."""
    from worklist.selectors import Coverage, coverage_for

    if study.worklist_claimed_by_id:
        return None
    if eligible:
        return Coverage(len(eligible), [], [])
    return coverage_for([study], at=at)[study.pk]
