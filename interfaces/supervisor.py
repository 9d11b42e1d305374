"""N processes of one edge service on one port (``dicom_scp --processes N``, ``hl7_listener
--processes N``; docs/ingest.md "Several processes on one port").

The parent binds the listening socket once and forks N children that all accept from it: one
accept queue, so an idle child takes the next association whichever child is busy, and the port
stays bound while a child is being replaced (a sender never sees "connection refused" because a
child died). The parent does nothing else: it opens no database connection, runs no event loop and
starts no thread, so forking it is safe and a replacement child is serving within milliseconds.

It supervises: a child that dies is logged and replaced, at once if it had run a while, else after
a growing delay (a child that cannot start must not spin the CPU). SIGTERM or SIGINT to the parent
is passed to every child, which stops accepting and finishes what it is doing (each service's own
graceful stop); a child still running after the grace period is killed.

``on_child_died(pid)`` runs in the parent after each child that ended was replaced (or at the
stop): the SCP closes the associations that child left open. It may use the database; its
connection is closed again before the next fork, so no child inherits it."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connections

log = logging.getLogger(__name__)

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def listening_socket(host: str, port: int, *, backlog: int = 128) -> socket.socket:
    """The one socket every child accepts from. ``backlog`` is the shared accept queue: a burst of
    associations waits there (not refused) until a child takes each."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind over TIME_WAIT after a restart
    sock.bind(address)
    sock.listen(backlog)
    # Non-blocking (a flag of the socket that every child shares): all children wake for one
    # connection and the ones that lose must get EAGAIN at once, not sit in accept() until the
    # next connection comes (which would also hold up their stop).
    sock.setblocking(False)
    return sock


@dataclass
class _Slot:
    number: int
    pid: int = 0
    started: float = 0.0
    quick_deaths: int = 0  # in a row: children that died before STABLE_SECONDS
    start_at: float = 0.0  # when to start the next child (after its backoff)


@dataclass
class Supervisor:
    """Forks ``processes`` children running ``child_main(sock)`` and keeps them running until
    SIGTERM/SIGINT. ``child_main`` returns when the child was asked to stop (its own SIGTERM)."""

    name: str
    sock: socket.socket
    processes: int
    child_main: Callable[[socket.socket], None]
    stop_grace_seconds: float = 20.0
    on_child_died: Callable[[int], None] | None = None
    _slots: list[_Slot] = field(default_factory=list)

    STABLE_SECONDS = 10.0  # a child that ran this long is replaced at once
    BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0

    def run(self) -> None:
        # Signals are taken synchronously (sigtimedwait), never by a handler that could run in the
        # middle of a fork; children unblock them first thing.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        connections.close_all()  # nothing to inherit (the parent should have opened none)
        self._slots = [_Slot(number=n) for n in range(1, self.processes + 1)]
        log.info("%s: %d processes on %s", self.name, self.processes, self.sock.getsockname())
        try:
            while True:
                dead = self._reap()
                self._start_due()  # the replacement first: the clean-up may wait on the database
                self._deaths_report(dead)
                received = signal.sigtimedwait(_SIGNALS, self._wait_seconds())
                if received is not None and received.si_signo in (signal.SIGTERM, signal.SIGINT):
                    name = signal.Signals(received.si_signo).name
                    log.info("%s: %s received, stopping the children", self.name, name)
                    break
        finally:
            self._stop_all()
            self.sock.close()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def child_pids(self) -> list[int]:
        return [slot.pid for slot in self._slots if slot.pid]

    # --- the children ------------------------------------------------------------------------

    def _start_due(self) -> None:
        if signal.sigpending() & {signal.SIGTERM, signal.SIGINT}:
            return  # stopping: Ctrl-C reaches the children too, and one that stopped first stays stopped
        now = time.monotonic()
        for slot in self._slots:
            if not slot.pid and slot.start_at <= now:
                self._start(slot)

    def _start(self, slot: _Slot) -> None:
        parent = os.getpid()
        _database_release_before_fork()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the parent's code
            status = 1
            try:
                _child_prepare(parent)
                self.child_main(self.sock)
                status = 0
            except BaseException:
                log.exception("%s child %d failed", self.name, slot.number)
            finally:
                logging.shutdown()
                os._exit(status)
        slot.pid, slot.started = pid, time.monotonic()
        log.info("%s: child %d started (pid %d)", self.name, slot.number, pid)

    def _reap(self) -> list[int]:
        dead: list[int] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return dead
            if pid == 0:
                return dead
            slot = next((s for s in self._slots if s.pid == pid), None)
            if slot is None:
                continue
            dead.append(pid)
            ran = time.monotonic() - slot.started
            slot.pid = 0
            slot.quick_deaths = 0 if ran >= self.STABLE_SECONDS else slot.quick_deaths + 1
            delay = replacement_delay(slot.quick_deaths, first=self.BACKOFF_FIRST, most=self.BACKOFF_MAX)
            slot.start_at = time.monotonic() + delay
            log.warning(
                "%s: child %d (pid %d) %s after %.1f s; replacing it in %.1f s",
                self.name, slot.number, pid, _exit_text(status), ran, delay,
            )  # fmt: skip

    def _deaths_report(self, pids: list[int]) -> None:
        if not pids or self.on_child_died is None:
            return
        for pid in pids:
            try:
                self.on_child_died(pid)
            except Exception:  # the database down, say: supervising goes on, the next start sweeps
                log.exception("%s: clean-up after child pid %d failed", self.name, pid)
        # the pool too, not only the session: a Django pool (READROOM_DB_POOL_MAX_SIZE in a shared
        # environment file) keeps a scheduler and three worker threads, which the parent otherwise
        # kept until its next fork (seen: 5 threads between a death and the next one). Forking is
        # safe either way (released again before each fork), but an idle parent now holds no thread.
        _database_release_before_fork()

    def _wait_seconds(self) -> float:
        waiting = [slot.start_at for slot in self._slots if not slot.pid]
        return max(0.0, min(waiting) - time.monotonic()) if waiting else 3600.0

    def _stop_all(self) -> None:
        stopping = self.child_pids()
        for pid in stopping:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_seconds + 5  # each child's own grace, then a margin
        while self.child_pids() and time.monotonic() < deadline:
            self._reap_stopping()
            if self.child_pids():
                signal.sigtimedwait({signal.SIGCHLD}, 0.2)
        for pid in self.child_pids():
            log.warning("%s: child pid %d did not stop in time; killing it", self.name, pid)
            _signal(pid, signal.SIGKILL)
        while self.child_pids():
            self._reap_stopping(block=True)
        self._deaths_report(stopping)  # a child killed after its grace left its associations open
        log.info("%s: stopped", self.name)

    def _reap_stopping(self, *, block: bool = False) -> None:
        for slot in self._slots:
            if slot.pid:
                try:
                    pid, status = os.waitpid(slot.pid, 0 if block else os.WNOHANG)
                except ChildProcessError:
                    pid, status = slot.pid, 0
                if pid:
                    log.info("%s: child %d (pid %d) %s", self.name, slot.number, slot.pid, _exit_text(status))
                    slot.pid = 0


def replacement_delay(quick_deaths: int, *, first: float, most: float) -> float:
    """Seconds before a dead child is replaced: none after a child that had run a while (0 quick
    deaths in a row), then ``first`` doubling per quick death, at most ``most``."""
    return min(first * 2 ** (quick_deaths - 1), most) if quick_deaths else 0.0


def _database_release_before_fork() -> None:
    """Close every PostgreSQL session and pool this parent holds before it forks. A child
    inherits the parent's sockets: a session or a pool (psycopg_pool keeps ``min_size`` sessions
    open) that is open at the fork is then used by parent and children at once, which is what a
    shared environment file with ``READROOM_DB_POOL_MAX_SIZE`` did: the start-up sweep opened
    the settings' pool, and the children's C-STOREs failed with "INTRANS" and results meant for
    another association. Closing here makes the parent's database use safe wherever it happens."""
    for connection in connections.all(initialized_only=True):
        connection.close()
        # Django's PostgreSQL pool (5.1+) lives on the backend class, made on first use only
        if connection.alias in getattr(connection, "_connection_pools", {}):
            connection.close_pool()


def _child_prepare(parent: int) -> None:
    """In a new child: signals as a normal process, and gone when the parent is (kill -9 of the
    parent must not leave orphans holding the port)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    # not Linux (no prctl): the parent's own stop still reaches the children
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
