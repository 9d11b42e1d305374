"""The ingest of a prior that comes back to the worker (C-GET, WADO-RS; docs/priors.md "Ingest on
several threads"): the instances are stored on a few threads while the next ones arrive, instead of
the receiving thread encrypting, fsyncing and indexing each before it reads the next.

Each instance takes the one receive path (``dicom_instance_receive``: the checks, quarantine,
encryption, the prior marking of ``imaging.services._prior_expected``), and the threads' images
are committed together by a ``GroupCommitter`` of this retrieve (one transaction and one WAL flush
for several, as the SCP does for concurrent associations): several threads each committing its own
instance would queue on the study row's counter lock while they wait for their files.

``finish`` (also on an error) waits for every instance handed in, so when the fetch is judged
(``prior_fetch_finish``) or discarded (``prior_partial_discard``) no instance is still being
written. ``threads=1`` is the synchronous path: each instance stored before the next is read, and
``submit`` returns its own outcome (a C-GET answers its C-STORE with it)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading

from django.conf import settings
from django.db import connections

from facilities.models import Facility
from imaging.group_commit import GroupCommitter
from imaging.services import IndexCache
from interfaces.dicom.receive import ReceiveResult, dicom_instance_receive

log = logging.getLogger(__name__)
_DONE = object()


class PriorIngest:
    """The instances of one retrieve, ingested by ``threads`` threads; at most ``threads`` more
    wait in memory (a full queue makes ``submit`` wait: the PACS is slowed, never outrun)."""

    def __init__(self, facility: Facility, *, threads: int | None = None) -> None:
        self.facility = facility
        self.threads = max(1, threads if threads is not None else settings.READROOM_PRIOR_INGEST_THREADS)
        self.completed = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._cache = IndexCache()  # the synchronous path's: one study and series looked up once
        self._queue: queue.Queue = queue.Queue(maxsize=self.threads)
        self._group: GroupCommitter | None = None
        self._workers: list[threading.Thread] = []
        if self.threads > 1:
            if settings.READROOM_DICOM_GROUP_COMMIT:
                self._group = GroupCommitter(
                    max_instances=settings.READROOM_DICOM_GROUP_COMMIT_MAX,
                    max_wait_seconds=settings.READROOM_DICOM_GROUP_COMMIT_WAIT_MS / 1000,
                )
            self._workers = [
                threading.Thread(target=self._work, name=f"prior-ingest-{n}", daemon=True)
                for n in range(self.threads)
            ]
            for worker in self._workers:
                worker.start()

    def submit(self, part10: bytes) -> int:
        """Hand in one received instance. The synchronous path returns its DIMSE status; the
        threaded one returns Success once it is queued (its outcome is counted by ``finish``)."""
        if not self._workers:
            return self._receive(part10, self._cache).status
        self._queue.put(part10)
        return 0x0000

    @property
    def deferred(self) -> bool:
        """Outcomes come after the answer: a C-GET's failures are ours to count, not the PACS's."""
        return bool(self.threads > 1)

    def finish(self) -> tuple[int, int]:
        """(completed, failed): waits for every instance handed in, then ends the threads."""
        for _worker in self._workers:
            self._queue.put(_DONE)
        for worker in self._workers:
            worker.join()
        self._workers = []
        if self._group is not None:
            self._group.stop()
        return self.completed, self.failed

    def _work(self) -> None:
        cache = IndexCache()  # each thread its own: a rolled-back group clears only the member's
        try:
            while (part10 := self._queue.get()) is not _DONE:
                arriving = self._group.arriving() if self._group else contextlib.nullcontext()
                with arriving:
                    self._receive(part10, cache)
        finally:
            connections.close_all()  # this thread's database session

    def _receive(self, part10: bytes, cache: IndexCache) -> ReceiveResult:
        try:
            result = dicom_instance_receive(
                facility=self.facility, part10=part10, cache=cache, group=self._group
            )
        except Exception as exc:  # counted failed (the prior is incomplete and retried), never lost
            log.exception("could not ingest a retrieved instance")
            result = ReceiveResult(0xA700, reason=str(exc))
        with self._lock:
            if result.ok:
                self.completed += 1
            else:
                self.failed += 1
        if not result.ok:
            log.warning("a retrieved instance was refused 0x%04X: %s", result.status, result.reason)
        return result
