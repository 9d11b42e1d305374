"""Group commit of received images (issue 16): the instances that concurrent C-STORE handlers
have checked and are writing are indexed by one of those handlers, several in one transaction, so
they share one COMMIT (one WAL flush) and one decode-check task instead of one each.

The guarantee is the per-instance one: a handler's ``commit`` returns only after its own group
has committed, and the group commits only after every member's file is written and fsynced
(``before_commit``), so a C-STORE Success still means "file on disk and row committed". If
anything in a group fails — a member's index, a file, the COMMIT itself — the group is rolled back
and each member is stored alone (``alone``: ``instance_stored``, its own transaction and retries),
so one bad instance never fails another, and each gets its own outcome (raised to its handler,
which answers the DICOM status it answers today).

Groups form by themselves: while one group commits, the next arrivals queue, and the first of them
to wake leads the next group. The leader waits (up to ``max_wait_seconds``, on a condition, not
polling) for more only while other handlers are still checking an instance (``arriving``), so a
lone association never waits for company, and commits in its own thread.

The decode checks of what it committed are published gathered: one task for the images of up to
``DISPLAY_CHECK_GATHER_SECONDS`` (or ``max_instances`` images), published by a thread of its own
once they are committed. A publish costs 1–2 ms of the SCP's CPU; one per image was ~15 % of an image's CPU
on a lone association, where every group is of one. The check is advisory and after the commit
anyway (frame 1 was decoded on receipt): a check is at most that much later, and a process killed
in between leaves those images unchecked (their metadata side-car is then made by the first
request for it, and a later broken frame is answered 422 when it is asked for)."""

from __future__ import annotations

import contextlib
import logging
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


DISPLAY_CHECK_GATHER_SECONDS = 0.1


class GroupCommitter:
    """One per SCP (``StorageScp``). No thread of its own commits: the handler that finds no
    commit under way leads the next one, in its own thread and on its own database session,
    taking every member waiting then (its own among them); the others wait on a condition and
    are woken the moment their group has committed, or one of them leads the next group. A lone
    association therefore commits in its own thread, as without group commit (no hand-off to a
    committer and back per image), and nothing polls. One small thread publishes the gathered
    decode checks, off every C-STORE's path."""

    def __init__(self, *, max_instances: int = 32, max_wait_seconds: float = 0.02) -> None:
        self.max_instances = max_instances
        self.max_wait_seconds = max_wait_seconds
        self.groups = 0  # committed groups, and the members they held (operations, tests)
        self.grouped = 0
        self.fallbacks = 0  # groups that failed and were stored member by member
        # one lock, three conditions, so a change wakes only who waits for it: a leader waiting
        # for company (a member or an arrival's end), members waiting for their turn or their
        # group's commit (a leader done), the decode-check publisher (checks added, stop)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # company for the leader
        self._turn = threading.Condition(self._lock)
        self._checks_ready = threading.Condition(self._lock)
        self._pending: list[GroupMember] = []
        self._leading = False  # a group is being gathered or committed
        self._arriving = 0
        self._counted = threading.local()
        self._stopped = False
        self._checks: list[int] = []  # committed images whose decode check is not published yet
        self._checks_since = 0.0
        self._publisher: threading.Thread | None = None

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around a handler's whole receive: while it checks an instance, its member may come."""
        with self._cond:
            self._arriving += 1
        self._counted.on = True
        try:
            yield
        finally:
            if self._counted.on:
                self._counted.on = False
                with self._cond:
                    self._arriving -= 1
                    self._cond.notify_all()  # a leader waiting for company need not wait for it

    def waiting(self) -> int:
        """Members queued for a group not yet begun (tests)."""
        with self._cond:
            return len(self._pending)

    def commit(self, member: GroupMember) -> InstanceRecorded:
        """Returns once the member's group has committed (or it was stored alone); raises what its
        lone store raised."""
        counted = getattr(self._counted, "on", False)
        self._counted.on = False
        with self._cond:
            if counted:
                self._arriving -= 1
            if self._stopped:
                self._cond.notify_all()
                running = False
            else:
                running = True
                self._pending.append(member)
                self._cond.notify_all()
        if not running:  # stopping: the associations still open store alone, in their own thread
            return member.alone()
        while not member.future.done():
            with self._lock:
                while self._leading and not member.future.done():
                    self._turn.wait()
                if member.future.done():
                    break
                self._leading = True
                group = self._gather(member)
            try:
                self._connection_check()
                self._commit(group)
            except BaseException as exc:  # never leave a member waiting for a group that died
                for other in group:
                    if not other.future.done():
                        other.future.set_exception(exc)
                raise
            finally:
                with self._lock:
                    self._leading = False
                    self._turn.notify_all()
        return member.future.result()

    def stop(self) -> None:
        """Members already queued are still committed by their handlers; later ones store alone.
        The decode checks gathered so far are published."""
        with self._cond:
            self._stopped = True
            publisher = self._publisher
            self._checks_ready.notify_all()
        if publisher is not None:
            publisher.join(30)

    # --- the leader ---------------------------------------------------------------------------

    def _gather(self, leader: GroupMember) -> list[GroupMember]:
        """Under the condition: the leader's member and those waiting, and while other handlers
        are still checking an instance, those that come within ``max_wait_seconds``."""
        group = [leader]
        deadline = time.monotonic() + self.max_wait_seconds
        while True:
            for member in self._pending:
                if member is not leader and len(group) < self.max_instances:
                    group.append(member)
            taken = {id(member) for member in group}
            self._pending = [member for member in self._pending if id(member) not in taken]
            remaining = deadline - time.monotonic()
            if len(group) >= self.max_instances or self._arriving <= 0 or remaining <= 0:
                return group
            self._cond.wait(remaining)  # woken by an arrival's member or its end

    @staticmethod
    def _connection_check() -> None:
        """This thread's session after an error (a PostgreSQL restart): replaced if unusable.
        Not ``close_if_unusable_or_obsolete``: with a pool (CONN_MAX_AGE 0) that hands the
        session back every time, and the next statement takes one out and checks it (a round trip)."""
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
        self._checks_add([r.instance_id for r in results])
        for member, recorded in zip(group, results, strict=True):
            member.future.set_result(recorded)

    def _alone(self, member: GroupMember) -> None:
        try:
            recorded = member.alone(display_check=False)
        except BaseException as exc:  # the handler answers it (0xA700, 0xC220 …)
            member.future.set_exception(exc)
            return
        self._checks_add([recorded.instance_id])
        member.future.set_result(recorded)

    # --- the decode checks: gathered, published by a thread of their own ------------------------

    def _checks_add(self, instance_ids: list[int]) -> None:
        with self._cond:
            if not self._stopped:
                if not self._checks:
                    self._checks_since = time.monotonic()
                self._checks += instance_ids
                if self._publisher is None:
                    self._publisher = threading.Thread(
                        target=self._publish_run, name="dicom-check-publish", daemon=True
                    )
                    self._publisher.start()
                self._checks_ready.notify_all()
                return
        _checks_publish(instance_ids)  # stopping: the publisher may be gone

    def _publish_run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._checks and not self._stopped:
                        self._checks_ready.wait()
                    while (
                        self._checks
                        and not self._stopped
                        and len(self._checks) < self.max_instances
                        and (wait := self._checks_since + DISPLAY_CHECK_GATHER_SECONDS - time.monotonic()) > 0
                    ):
                        self._checks_ready.wait(wait)
                    ids, self._checks = self._checks, []
                    stopped = self._stopped
                if ids:
                    _checks_publish(ids)
                if stopped:
                    return
        finally:
            connections.close_all()


def _checks_publish(ids: list[int]) -> None:
    if not ids:
        return
    try:
        instances_display_check_publish(ids)
    except Exception:  # the images are committed: a lost check is logged, never their failure
        log.exception("could not enqueue the decode check of %d instances", len(ids))
