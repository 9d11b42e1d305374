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
plus ``row`` and ``was`` for worklist pages, ``xid`` on PostgreSQL (the transaction whose commit it
announces, as text: a page tests it against the snapshot its last resync was read in), and, for some
kinds, more keys (an escalation's step)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from radiology.visibility import writer_xid
from worklist.groups import OPERATIONS_GROUP, SESSION_ENDED, session_group, user_group

logger = logging.getLogger(__name__)


async def _messages_send(messages: list[tuple[str, dict]], as_events: bool = True) -> None:
    # One coroutine for all the groups: one event loop (and, with channels-redis, one connection)
    # per event rather than per group. An event goes to the browser (``worklist.event``); other
    # messages (``SESSION_ENDED``) are for the consumer itself.
    layer = get_channel_layer()
    for group, event in messages:
        await layer.group_send(group, {"type": "worklist.event", "event": event} if as_events else event)


class _SenderLoop:
    """One event loop per process for the channel sends from synchronous code (DESIGN.md §7): with
    channels-redis a loop keeps its connection pool, whereas ``async_to_sync`` per send made a new
    loop, a new Redis connection and a flush on its close — every event, twice for a code stroke.

    The loop runs in a daemon thread of its own, so a sync caller in a thread that already runs a
    loop (a sync ORM write under Playwright's sync API, the listener's inline apply) sends the same
    way. A forked child (Celery's prefork pool) starts its own: a thread does not survive a fork."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                self._pid = os.getpid()
                threading.Thread(target=self._loop.run_forever, name="channel-sends", daemon=True).start()
            return self._loop


_SENDER = _SenderLoop()
SEND_TIMEOUT_SECONDS = 10


def _layer_send(messages: list[tuple[str, dict]], *extra) -> None:
    """Hand ``messages`` to the channel layer from synchronous code, on the process's sender loop;
    returns once they are handed over (the caller's order is the order the sockets see)."""
    if not messages:
        return
    future = asyncio.run_coroutine_threadsafe(_messages_send(messages, *extra), _SENDER.loop())
    future.result(SEND_TIMEOUT_SECONDS)


def groups_send_now(groups: Iterable[str], event: dict) -> None:
    """Send at once; only for callers that already run after commit."""
    _layer_send([(group, event) for group in dict.fromkeys(groups)])


def on_user_logged_out(sender, request, user, **kwargs) -> None:
    """Logout ends the session: its open sockets close at once (4401), so a signed-out browser
    hears no more events (issue 15 §9). Sent now, not on commit: the logout is no transaction."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        sockets_close([session_group(session_key)])


def sockets_close(groups: Iterable[str]) -> None:
    """Tell every socket in ``groups`` to close (``SESSION_ENDED``, not an event for the browser)."""
    _layer_send([(group, SESSION_ENDED) for group in groups], False)


def session_state_send(session_key: str | None, state: str) -> None:
    """Tell one browser session's sockets that its screen is now ``"locked"`` or ``"live"``
    (``WorklistConsumer.session_state``): a locked session's sockets forward only what the lock may
    show. After commit: the caller saved the session state first, so the sockets' own periodic
    check of the session finds the same state."""
    if session_key:
        message = {"type": "session.state", "state": state}
        transaction.on_commit(
            lambda: _layer_send([(session_group(session_key), message)], False), robust=True
        )


def on_screen_locked(sender, session_key: str | None = None, **kwargs) -> None:
    """The server locked an idle session (accounts.middleware.ScreenLockMiddleware): its sockets
    forward only what the lock may show from now, as after the page's own ``POST /live/lock/``."""
    session_state_send(session_key, "locked")


def group_event_send(group: str, event: dict) -> None:
    """Queue ``event`` for every socket in ``group`` once the current transaction commits."""
    transaction.on_commit(lambda: groups_send_now([group], event), robust=True)


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


@dataclass(frozen=True)
class StudyChange:
    """One change to tell: ``study.<kind>`` with ``extra`` keys and the place it left (``Before``)."""

    kind: str
    extra: dict | None = None
    before: Before | None = None


def study_event_broadcast(
    kind: str,
    study_id: int,
    *,
    extra: dict | None = None,
    also: Iterable[str] = (),
    before: Before | None = None,
    eligible: Iterable[int] | None = None,
) -> None:
    """After commit, tell ``study.<kind>`` to the study's audience — each reader the change to their
    own list — and to the groups in ``also`` (e.g. the director's). The audience is computed after
    commit, from committed state, so it reflects the change that caused the event. ``before``: see
    ``Before``; by default the holder is the one of now (escalated, cancelled, finalized).
    ``eligible``: see ``study_changes_broadcast``."""
    study_changes_broadcast(study_id, [StudyChange(kind, extra, before)], also=also, eligible=eligible)


def study_changes_broadcast(
    study_id: int,
    changes: list[StudyChange],
    *,
    also: Iterable[str] = (),
    eligible: Iterable[int] | None = None,
) -> None:
    """Several changes one transaction made to one study (a stroke's routing: *added* and its alert
    step), told after commit with one audience and one set of rows: the committed state is the same
    for all of them, so computing it per change only delayed the alert.

    A change that calls for a code-stroke alert sends the small ``alert`` event (the same for every
    recipient) to the whole audience first, before any row is rendered: the banner must not wait for
    the worklists' rows (issue 14's target, docs/alerts.md). Operations (and ``also``) are told it
    before the readers' eligibility is computed: their groups do not depend on it.

    ``eligible``: the reader ids the caller has just computed inside the transaction with the same
    rule, after every change the transaction makes (an escalation step's ``notified`` record; a
    stroke's routing, whose alert record is computed after the routing's own changes) — reused, so
    the audience is the one the record names and eligibility is computed once rather than twice
    (docs/alerts.md "One eligibility pass per step")."""
    also = list(dict.fromkeys(also))
    known = None if eligible is None else frozenset(eligible)
    # the transaction whose commit this announces: a page whose resync already saw that commit
    # keeps its counts (radiology.visibility; worklist.js)
    committed = {"xid": xid} if (xid := writer_xid()) is not None else {}

    def send() -> None:
        from credentialing.eligibility import eligible_readers
        from imaging.models import Study
        from worklist.selectors import WORKLIST_RELATED

        study = Study.objects.select_related(*WORKLIST_RELATED, "assignment__claimed_by").filter(pk=study_id)
        study = study.first()
        if study is None:
            return
        at = timezone.now()
        payload = study_event_payload(study)
        bases = [
            {"type": f"study.{c.kind}", "study": payload, **(c.extra or {}), **committed} for c in changes
        ]
        alert = study_alert_event(study, payload, bases)
        if alert is not None:  # the groups that need no eligibility first
            _layer_send([(group, alert) for group in dict.fromkeys([OPERATIONS_GROUP, *also])])
        # once, for every change (or the caller's, computed in the transaction)
        eligible = set(known) if known is not None else {r.pk for r in eligible_readers(study, at)}
        if alert is not None:
            _layer_send([(user_group(reader), alert) for reader in sorted(eligible)])
        holder = study.worklist_claimed_by_id
        rendered: dict[str, dict] = {}  # the rows, shared by the changes (one committed state)
        messages: list[tuple[str, dict]] = []
        for change, base in zip(changes, bases, strict=True):
            was = change.before or _BEFORE_BY_KIND.get(change.kind) or Before(holder_id=holder)
            messages += study_fanout(study, base, was, at, eligible=eligible, rendered=rendered)
            messages += [(group, base) for group in also]
        _layer_send(messages)

    # robust: a screen that cannot be told must not turn a committed claim into an error response
    transaction.on_commit(send, robust=True)


# The code-stroke steps in escalation order (worklist.escalation records them; live.js shows them).
STROKE_STEPS = ("stroke_alert", "stroke_readers", "stroke_director")


def study_alert_event(study, payload: dict, bases: list[dict]) -> dict | None:
    """``{"type": "alert", "step", "at", "study"}`` when one of these events raises a code-stroke
    banner (the rule live.js and worklist.js applied to the study events: an unclaimed, open, listed
    code stroke that is added or updated — its ``stroke_alert`` — or escalated to a stroke step); the
    latest step when several do. None otherwise."""
    from imaging.models import OPEN_STUDY_STATUSES

    if not payload["is_stroke"] or payload["claimed_by"] is not None:
        return None
    if not study.worklist_routed or study.status not in OPEN_STUDY_STATUSES:
        return None
    steps: list[tuple[str, str | None]] = []
    for base in bases:
        if base["type"] in ("study.added", "study.updated"):
            steps.append(("stroke_alert", None))
        escalation = base.get("escalation") or {}
        if base["type"] == "study.escalated" and escalation.get("step") in STROKE_STEPS:
            steps.append((escalation["step"], escalation.get("at")))
    if not steps:
        return None
    step, at = max(steps, key=lambda item: STROKE_STEPS.index(item[0]))
    return {"type": "alert", "step": step, "at": at or timezone.now().isoformat(), "study": payload}


def study_fanout(
    study, base: dict, was: Before, at, *, eligible: set[int], rendered: dict[str, dict] | None = None
) -> list[tuple[str, dict]]:
    """(group, event) for operations and every reader who hears of the study (``eligible``: the
    readers eligible now): each gets the row for their own list, rendered once per distinct shape
    (``rendered`` keeps them, so several events of one committed state share them)."""
    from imaging.models import OPEN_STUDY_STATUSES
    from worklist.rows import (
        operations_row_html,
        reader_row,
        reader_row_values,
        row_decorate,
        row_facts,
        row_sort,
    )

    holder = study.worklist_claimed_by_id
    on_list = study.worklist_routed and study.status in OPEN_STUDY_STATUSES
    readers_before = eligible if was.readers is None else was.readers
    facts_before = {
        **row_facts(study),
        "priority": was.priority or study.priority,
        **({"subspecialty": was.subspecialty} if was.subspecialty is not None else {}),
    }
    rendered = {} if rendered is None else rendered

    def row(shape: str) -> dict:
        # one rendering per shape: "mine" (the holder's page), "other" (every other eligible reader)
        if shape not in rendered:
            if shape == "gone":
                rendered[shape] = {"op": "remove"}
            elif shape == "ops":
                row_decorate(study, viewer_id=None, at=at)
                rendered[shape] = {
                    "op": "upsert",
                    "html": operations_row_html(study, _coverage(study, eligible, at)),
                    "sort": row_sort(study, mine=False),
                    "facts": row_facts(study),
                }
            else:  # a reader's row, by the code that builds their page's rows
                viewer = holder if shape == "mine" else None
                pushed = reader_row(reader_row_values(study), viewer_id=viewer, at=at)
                rendered[shape] = {
                    "op": "upsert",
                    "html": pushed.html,
                    "sort": pushed.sort,
                    "facts": pushed.facts,
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
        from django.contrib.auth import get_user_model

        names = get_user_model().objects.filter(pk__in=eligible).order_by("display_name", "username")
        return Coverage(len(eligible), [], [], tuple(str(u) for u in names))
    return coverage_for([study], at=at)[study.pk]
