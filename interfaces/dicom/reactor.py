"""pynetdicom's two reactors, waiting for work instead of polling every millisecond (issue 16).

pynetdicom 3 runs each association in two threads that poll. The DUL thread
(``DULServiceProvider.run_reactor``) sleeps 1 ms whenever a turn found nothing to do, then asks the
socket with a zero-timeout ``select``; the association thread (``Association._run_reactor``) sleeps
1 ms on *every* turn, then looks into its queues. So each C-STORE waits for up to three sleeps (its
last PDU noticed by the DUL, its message by the association, its response by the DUL again), and an
association, busy or idle, wakes ~2,000 times a second to look — Python that takes the GIL from the
threads doing the work. pynetdicom's configuration cannot change this: ``_config`` has no reactor
setting, the DUL's ``_run_loop_delay`` is private (lowering it only makes the polling faster, and
an idle association spin harder) and the association's 1 ms is a literal.

Here both threads sleep on what they wait for:

- the DUL thread in ``select`` on its socket *and* a wake-up socket pair, written whenever a
  primitive is queued for it (``send_pdu``: a C-STORE response, an A-ABORT) or it is told to stop;
- the association thread on a ``threading.Event`` set by every put into the two queues it reads
  (the DIMSE messages, the DUL's primitives for the user: A-RELEASE, A-ABORT), by ``kill`` and by
  its DUL thread ending.

Both still wake every ``IDLE_WAIT`` seconds with nothing to do, for what nobody signals: the ARTIM
and network (idle) timers, a flag set directly. Everything else is pynetdicom's code, unchanged.

Installed in one place: ``wake_on_work(assoc)``, called by the SCP for each association it accepts
(``interfaces.dicom.scp._ConnectionReturningHandler``), before its threads start. pynetdicom builds
the Association and its DUL inside ``RequestHandler._create_association`` and
``Association.__init__`` with no factory to hand it a subclass, so ``wake_on_work`` switches the
two objects' classes to the subclasses below (same attributes, a few methods overridden). Our own
outgoing associations (C-MOVE sub-operations, priors) keep pynetdicom's reactors.

Upstream-able as: an overridable wait in both loops, or the same event-driven waits in place of
the sleeps (pynetdicom's own ``# TODO: try and make this event based rather than running loops``
in ``DULServiceProvider.__init__``).

Two overrides copy an upstream method with its one sleep replaced (``run_reactor``,
``_run_reactor``); the others wrap upstream methods. ``UPSTREAM_SOURCES`` pins the source of every
upstream function this relies on: if pynetdicom changes one, ``wake_on_work`` leaves the
association as pynetdicom made it (logged once) and ``tests/interfaces/test_dicom_reactor.py`` fails,
so an upgrade is looked at, not silently half-patched."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import queue
import select
import socket
import ssl
import threading
import time
from functools import cache

from pynetdicom import evt
from pynetdicom.association import LOGGER as ASSOCIATION_LOG
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import LOGGER as DUL_LOG
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler
from pynetdicom.utils import make_target

log = logging.getLogger(__name__)

# With nothing signalled, each thread looks again after this long: the resolution of the ARTIM
# and network timeouts (seconds long), and 40 wake-ups a second per idle association instead of ~2,000.
IDLE_WAIT = 0.05

# sha256 (first 16 hex digits) of inspect.getsource() of each upstream function copied, wrapped or
# relied on (pynetdicom 3.0.4). Re-read the copies against a changed one before updating its hash.
UPSTREAM_SOURCES = {
    "DULServiceProvider.__init__": "c82dafa9438ddf70",
    "DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    "DULServiceProvider.send_pdu": "7cbce5da8594124e",
    "DULServiceProvider.kill_dul": "5ceccf8dd01c2072",
    "DULServiceProvider.stop_dul": "28a7e0be126e7b30",
    "DULServiceProvider._is_transport_event": "8725ed03bb8fbdef",
    "Association.__init__": "eb07516b8009ad8f",
    "Association._run_reactor": "f28838c5559e462a",
    "Association.kill": "8f9713666a7f4cff",
    "DIMSEServiceProvider.__init__": "bbecd186810e7700",
    "AssociationSocket.recv": "6bc20a33b1b7cfe7",
    "AssociationSocket.close": "c726c8db53813d55",
    "DULServiceProvider._read_pdu_data": "19f2d4e38c13c835",
    "RequestHandler._create_association": "05c8d12b79863cdb",
}
_UPSTREAM = {
    "DULServiceProvider": DULServiceProvider,
    "Association": Association,
    "DIMSEServiceProvider": DIMSEServiceProvider,
    "AssociationSocket": AssociationSocket,
    "RequestHandler": RequestHandler,
}


def upstream_source_hash(qualname: str) -> str:
    owner, name = qualname.split(".")
    source = inspect.getsource(getattr(_UPSTREAM[owner], name))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def upstream_changed() -> list[str]:
    """The pinned upstream functions whose source is no longer the one this module was written for."""
    return [name for name, digest in UPSTREAM_SOURCES.items() if upstream_source_hash(name) != digest]


@cache
def _patch_applies() -> bool:
    changed = upstream_changed()
    if changed:
        log.warning(
            "pynetdicom changed under interfaces.dicom.reactor (%s): associations keep its polling reactors",
            ", ".join(changed),
        )
    return not changed


def wake_on_work(assoc: Association) -> None:
    """Make an accepted association's two threads wait for work instead of polling. Call before
    the association starts (its DUL thread is started by its own)."""
    if not _patch_applies() or assoc.is_alive():
        return
    work = threading.Event()
    assoc.__class__ = WakingAssociation
    assoc._work = work
    assoc.dimse.msg_queue = _SignallingQueue(work)
    dul = assoc.dul
    dul.__class__ = WakingDUL
    dul.to_user_queue = _SignallingQueue(work)
    dul._wake_receiver, dul._wake_sender = socket.socketpair()
    dul._wake_receiver.setblocking(False)
    dul._wake_sender.setblocking(False)
    if dul.socket is not None:
        dul.socket.__class__ = ReadIntoSocket


class _SignallingQueue(queue.Queue):
    """A queue that sets ``work`` whenever something is put into it."""

    def __init__(self, work: threading.Event) -> None:
        super().__init__()
        self._work = work

    def _put(self, item) -> None:  # called by put() under the queue's own lock
        super()._put(item)
        self._work.set()


class WakingDUL(DULServiceProvider):
    """The DUL thread waits in ``select`` on its socket and its wake-up pair (``_wait_for_work``)."""

    _wake_receiver: socket.socket
    _wake_sender: socket.socket

    def run(self) -> None:
        # Thread.run would call the target bound in __init__: upstream's run_reactor, not ours
        try:
            make_target(self.run_reactor)()
        finally:
            self._wake_receiver.close()
            self._wake_sender.close()
            self.assoc._work.set()  # the association reactor checks whether its DUL is alive

    def _wake(self) -> None:
        # BlockingIOError: already full (it will wake); OSError: the thread has ended
        with contextlib.suppress(OSError):
            self._wake_sender.send(b"\0")

    def _wait_for_work(self) -> None:
        """Return when the socket has data, a primitive was queued, or after ``IDLE_WAIT``. In
        Sta13 (release sent, waiting for the peer to close) upstream looks once more after its
        short sleep and then closes: kept as it is."""
        if self.state_machine.current_state == "Sta13":
            time.sleep(self._run_loop_delay)
            return
        if not self.to_provider_queue.empty() or not self.event_queue.empty():
            return
        watched = [self._wake_receiver]
        peer = self.socket.socket if self.socket is not None else None
        if peer is not None:
            if isinstance(peer, ssl.SSLSocket) and peer.pending():  # decrypted bytes select cannot see
                return
            watched.append(peer)
        try:
            readable, _, _ = select.select(watched, [], [], IDLE_WAIT)
        except (OSError, ValueError):  # the peer socket was closed meanwhile: the loop will see it
            return
        if self._wake_receiver in readable:
            with contextlib.suppress(OSError):  # BlockingIOError once drained
                while self._wake_receiver.recv(4096):
                    pass

    def send_pdu(self, primitive) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True  # as upstream's, which then waits for the thread to end
            self._wake()
        return super().stop_dul()

    def run_reactor(self) -> None:
        """pynetdicom 3.0.4's ``DULServiceProvider.run_reactor``, with ``time.sleep(self._run_loop_delay)``
        replaced by ``self._wait_for_work()``; nothing else changed."""
        # Main DUL loop
        self._idle_timer.start()
        sleep = False

        while True:
            # Let the assoc reactor off the leash
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                # When single-stepping the reactor, sleep between events so that
                # test code has time to run.
                sleep = True

            if sleep:
                # If there were no events to process on the previous loop,
                #   wait for the socket or a primitive before checking again,
                #   otherwise check immediately
                self._wait_for_work()

            if self._kill_thread:
                break

            # Check the ARTIM timer first so its event is placed on the queue
            #   ahead of any other events this loop
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")

            # Check the connection for incoming data
            try:
                # We can either encode and send a primitive **OR**
                #   receive and decode a PDU per loop of the reactor
                if self._process_recv_primitive():  # encode (sent by state machine)
                    pass
                elif self._is_transport_event():  # receive and decode PDU
                    self._idle_timer.restart()
            except Exception as exc:
                DUL_LOG.error("Exception in DUL.run(), aborting association")
                DUL_LOG.exception(exc)
                # Bypass the state machine and send an A-ABORT
                #   we do it this way because an exception here will mess up
                #   the state machine and we can't guarantee it'll get sent
                #   otherwise
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                # Hard shutdown of the Association and DUL reactors
                self.assoc._kill = True
                self._kill_thread = True
                return

            # Check the event queue to see if there is anything to do
            try:
                event = self.event_queue.get(block=False)
            # If the queue is empty, return to the start of the loop
            except queue.Empty:
                sleep = True
                continue

            self.state_machine.do_action(event)
            sleep = False


class WakingAssociation(Association):
    """The association thread waits on ``_work`` (set by its queues, ``kill`` and its DUL ending)."""

    _work: threading.Event

    def kill(self) -> None:
        self._kill = True  # upstream sets it too; first, so the woken reactor sees it
        self._work.set()
        super().kill()

    def _wait_for_work(self) -> None:
        # cleared after the wait and before the turn looks into the queues: a put after the clear
        # sets it again, so nothing put is missed, at worst one turn finds nothing
        self._work.wait(IDLE_WAIT)
        self._work.clear()

    def _run_reactor(self) -> None:
        """pynetdicom 3.0.4's ``Association._run_reactor``, with ``time.sleep(0.001)`` replaced by
        ``self._wait_for_work()``; nothing else changed."""
        self._is_paused = False
        while not self._kill:
            self._wait_for_work()

            # A race condition may occur if the Acceptor uses the send_*()
            #   methods as the received DIMSE message may be taken off the
            #   queue before the send_*() method gets to it, so we allow
            #   the reactor to be paused
            # We also need to be careful that the reactor actually stops
            #   before attempting DIMSE or ACSE messaging
            # Will block until `_reactor_checkpoint` is set()
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            # Check with the DIMSE provider to see if a completely decoded
            #   message is available
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, context_id)

            # Check for release request from the peer
            if self.is_established and self.acse.is_release_requested():
                # Send A-RELEASE response
                self.acse.send_release(is_response=True)
                ASSOCIATION_LOG.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            # Check for abort from either locally or the peer
            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                ASSOCIATION_LOG.info(log_msg)
                # Ensure that EVT_ASCE_RECV fires for subscribers
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            # Check if the DULServiceProvider thread is still running
            #   DUL.is_alive() is inherited from threading.thread
            if not self.dul.is_alive():
                self.kill()
                return

            # Check if network_timeout has expired
            if self.dul.idle_timer_expired():
                ASSOCIATION_LOG.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()

                self.kill()
                return


class ReadIntoSocket(AssociationSocket):
    """``recv`` reads straight into one buffer of the PDU's size, as much as the kernel has each
    time; upstream reads 4,096 bytes per call into a growing bytearray (~130 calls and copies for
    a 512 KB image)."""

    def recv(self, nr_bytes: int) -> bytearray:
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        read = 0
        try:
            while read < nr_bytes:
                got = self.socket.recv_into(view[read:])
                if not got:  # the connection is broken: what was read so far, as upstream
                    break
                read += got
        finally:
            view.release()
        if read < nr_bytes:
            del buffer[read:]
        return buffer
