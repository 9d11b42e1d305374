"""Group commit of received images (issue 16): the instances that concurrent C-STORE handlers
have checked and are writing are indexed by one thread, several in one transaction, so they share
one COMMIT (one WAL flush) and one decode-check task instead of one each.

The guarantee is the per-instance one: a handler's ``commit`` returns only after its own group
has committed, and the group commits only after every member's file is written and fsynced
(``before_commit``), so a C-STORE Success still means "file on disk and row committed". If
anything in a group fails — a member's index, a file, the COMMIT itself — the group is rolled back
and each member is stored alone (``alone``: ``instance_stored``, its own transaction and retries),
so one bad instance never fails another, and each gets its own outcome (raised to its handler,
which answers the DICOM status it answers today).

Groups form by themselves: while one group commits, the next arrivals queue. The committer waits
(up to ``max_wait_seconds``, on a condition, not polling) for more only while other handlers are
still checking an instance (``arriving``), so a lone association never waits for company.

A handler that finds nothing to share with — no commit under way, nobody queued, no other handler
arriving — commits its instance in its own thread (``_inline``), as a group of one: two thread
hand-offs fewer (to the committer and back), each a wake-up that waits for a core on a loaded
machine. It holds the one commit slot the committer's groups use, so what arrives meanwhile
queues and forms the next group exactly as behind a committer's group. (Every handler leading
its own group, with no committer thread, was tried and was slower on four associations: the next
group waited for a sleeping handler to be scheduled. Here the committer thread still leads every
group of more than one.)

The decode checks of what it committed are published gathered: one task for the images of up to
``DISPLAY_CHECK_GATHER_SECONDS`` (or ``max_instances`` images), published by this thread once they
are committed. A publish costs 1–2 ms of the SCP's CPU; one per image was ~15 % of an image's CPU
on a lone association, where every group is of one. The check is advisory and after the commit
anyway (frame 1 was decoded on receipt): a check is at most that much later, and a process killed
in between leaves those images unchecked (their metadata side-car is then made by the first
request for it, and a later broken frame is answered 422 when it is asked for)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from django.db import connections, transaction

from imaging.services import InstanceRecorded, instances_display_check_publish

log = logging.getLogger(__name__)


@dataclass
class GroupMember:
    index: Callable[[], InstanceRecorded]  # in the group's transaction
    before_commit: Callable[[], object]  # waits for the member's file (raises if it failed)
    # in its own transaction (a group of one, or after the group failed); display_check=False:
    # the committer publishes its decode check
    alone: Callable[..., InstanceRecorded]
    forget: Callable[[], None]  # drop what the rolled-back group put in the member's cache
    order: tuple[str, ...] = ()  # the order rows are locked in: two processes' groups cannot deadlock
    future: Future = field(default_factory=Future)


_STOP = object()
_WAKE = object()  # the committer looks at its gathered checks' timer again (an inline commit added some)
DISPLAY_CHECK_GATHER_SECONDS = 0.1


class GroupCommitter:
    """One per SCP (``StorageScp``): a thread with its own database session."""

    def __init__(self, *, max_instances: int = 32, max_wait_seconds: float = 0.02) -> None:
        self.max_instances = max_instances
        self.max_wait_seconds = max_wait_seconds
        self.groups = 0  # committed groups, and the members they held (operations, tests)
        self.grouped = 0
        self.fallbacks = 0  # groups that failed and were stored member by member
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        # notified (under _lock) when a member is queued or an arrival ends: a committer waiting
        # for company wakes at once instead of polling
        self._changed = threading.Condition(self._lock)
        self._arriving = 0
        self._pending = 0  # members queued or gathered for the committer, not committing yet
        self._busy = False  # the commit slot: a group (or an inline commit) is under way
        self.inline = 0  # instances committed in their handler's thread (operations, tests)
        self._counted = threading.local()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._checks: list[int] = []  # committed images whose decode check is not published yet
        self._checks_since = 0.0

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around a handler's whole receive: while it checks an instance, its member may come."""
        self._arrival(+1)
        self._counted.on = True
        try:
            yield
        finally:
            if self._counted.on:
                self._counted.on = False
                self._arrival(-1)

    def waiting(self) -> int:
        """Members waiting for the committer's next group (tests)."""
        return self._pending

    def commit(self, member: GroupMember) -> InstanceRecorded:
        """Returns once the member's group has committed (or it was stored alone); raises what its
        lone store raised."""
        counted = getattr(self._counted, "on", False)
        with self._lock:
            running = not self._stopped
            others_arriving = self._arriving - (1 if counted else 0)
            inline = running and not self._busy and self._pending == 0 and others_arriving <= 0
            if inline:
                self._busy = True
            elif running:
                self._started()
                self._pending += 1
                self._queue.put(member)
                self._changed.notify_all()
        if counted:
            self._counted.on = False
            self._arrival(-1)
        if not running:  # stopping: the associations still open store alone, in their own thread
            return member.alone()
        if inline:
            return self._inline(member)
        return member.future.result()

    def _inline(self, member: GroupMember) -> InstanceRecorded:
        """A group of one in the handler's own thread (module docstring), holding the commit slot."""
        try:
            recorded = member.alone(display_check=False)
        finally:
            with self._lock:
                self._busy = False
                self._changed.notify_all()  # a committer waiting for the slot, with what queued meanwhile
        self.inline += 1
        if not recorded.prior_retrieving:  # checked when its retrieval ends
            self._checks_add([recorded.instance_id])
        return recorded

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None:
            thread.join(30)

    # --- the committer thread -----------------------------------------------------------------

    def _arrival(self, step: int) -> None:
        with self._lock:
            self._arriving += step
            self._changed.notify_all()

    def _started(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dicom-group-commit", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            while (group := self._gather()) is not None:
                try:
                    self._connection_check()
                    self._commit(group)
                finally:
                    with self._lock:
                        self._busy = False
                        self._changed.notify_all()
                with self._lock:
                    due = self._checks_due()
                if due:
                    self._checks_publish()
        finally:
            self._checks_publish()
            connections.close_all()  # this thread's session (back to the pool, with one)

    def _checks_due(self) -> bool:
        """Under ``_lock``: the gathered checks are to be published now."""
        return bool(self._checks) and (
            len(self._checks) >= self.max_instances
            or time.monotonic() - self._checks_since >= DISPLAY_CHECK_GATHER_SECONDS
        )

    def _checks_add(self, instance_ids: list[int]) -> None:
        """Gathered for one publish. From an inline commit (a handler's thread) the committer
        thread is woken to time them and publish them when due: a publish (1–2 ms, more on a
        loaded machine) never delays a handler's answer."""
        handler = threading.current_thread() is not self._thread
        with self._lock:
            first = not self._checks
            if first:
                self._checks_since = time.monotonic()
            self._checks += instance_ids
            orphaned = handler and self._stopped  # the committer has published its last, or will not
            if handler and not self._stopped and (first or self._checks_due()):
                self._started()
                self._queue.put(_WAKE)
        if orphaned:
            self._checks_publish()

    def _checks_publish(self) -> None:
        with self._lock:
            ids, self._checks = self._checks, []
        if not ids:
            return
        try:
            instances_display_check_publish(ids)
        except Exception:  # the images are committed: a lost check is logged, never their failure
            log.exception("could not enqueue the decode check of %d instances", len(ids))

    def _next(self):
        """The next member (or _STOP); with checks gathered, they are published when none comes
        before their time is up."""
        while True:
            with self._lock:
                since = self._checks_since if self._checks else None
            if since is None:
                item = self._queue.get()
            else:
                try:
                    wait = since + DISPLAY_CHECK_GATHER_SECONDS - time.monotonic()
                    item = self._queue.get(timeout=max(wait, 0.0))
                except queue.Empty:
                    self._checks_publish()
                    continue
            if item is not _WAKE:
                return item

    def _gather(self) -> list[GroupMember] | None:
        first = self._next()
        if first is _STOP:
            return None
        with self._lock:
            while self._busy:  # an inline commit holds the slot: what queues meanwhile joins this group
                self._changed.wait()
            self._busy = True
        group = [first]
        deadline = time.monotonic() + self.max_wait_seconds
        while len(group) < self.max_instances:
            try:
                member = self._queue.get_nowait()
            except queue.Empty:
                with self._lock:
                    remaining = deadline - time.monotonic()
                    if self._arriving <= 0 or remaining <= 0:
                        break
                    if self._queue.empty():  # a put comes under this lock: no wake-up is lost
                        self._changed.wait(remaining)
                continue
            if member is _WAKE:
                continue
            if member is _STOP:
                self._queue.put(_STOP)  # after this group
                break
            group.append(member)
        with self._lock:
            self._pending -= len(group)
        return group

    @staticmethod
    def _connection_check() -> None:
        """This thread's session after an error (a PostgreSQL restart): replaced if unusable.
        Not ``close_if_unusable_or_obsolete``: with a pool (CONN_MAX_AGE 0) that handed the
        session back before every group, and the next statement took one out and checked it
        (a ``SELECT 1`` round trip per group)."""
        connection = connections["default"]
        if connection.connection is not None and connection.errors_occurred:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()

    def _commit(self, group: list[GroupMember]) -> None:
        if len(group) == 1:
            self._alone(group[0])
            return
        group.sort(key=lambda member: member.order)
        committed: list[bool] = []
        results: list[InstanceRecorded] = []
        try:
            with transaction.atomic():
                transaction.on_commit(lambda: committed.append(True))  # first of the callbacks
                results = [member.index() for member in group]
                for member in group:
                    member.before_commit()
        except Exception as exc:
            if not committed:
                self.fallbacks += 1
                log.warning("a group of %d instances failed (%s): storing each alone", len(group), exc)
                for member in group:
                    member.forget()
                for member in group:
                    self._alone(member)
                return
            # an on-commit callback (routing's) raised: the rows are committed all the same
            log.exception("after a group of %d instances committed", len(group))
        self.groups += 1
        self.grouped += len(group)
        self._checks_add([r.instance_id for r in results if not r.prior_retrieving])
        for member, recorded in zip(group, results, strict=True):
            member.future.set_result(recorded)

    def _alone(self, member: GroupMember) -> None:
        try:
            recorded = member.alone(display_check=False)
        except BaseException as exc:  # the handler answers it (0xA700, 0xC220 …)
            member.future.set_exception(exc)
            return
        if not recorded.prior_retrieving:  # checked when its retrieval ends
            self._checks_add([recorded.instance_id])
        member.future.set_result(recorded)
