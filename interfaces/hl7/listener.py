"""The HL7 MLLP listener: python-hl7's asyncio streams, persistent connections, many senders.

Per frame: store it and decide the ACK (one committed INSERT, in Django's sync thread), write the
ACK, then enqueue the apply task. A frame over the size limit, a frame without its start byte or
random bytes are answered and recorded, and the connection goes on serving the next frame."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import socket
import ssl
import threading
import time
from asyncio import IncompleteReadError, LimitOverrunError
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK, HL7StreamProtocol, HL7StreamReader

from interfaces.hl7.inbound import hl7_frame_receive, hl7_unavailable_ack
from interfaces.tls import server_tls_context

log = logging.getLogger(__name__)
FRAME_END = END_BLOCK + CARRIAGE_RETURN


class InboxThread:
    """One thread does the inbox's database work, for every connection: writes keep their order,
    there is one database connection, and (embedded, SQLite) one writer.

    The hop is a queue in and ``call_soon_threadsafe`` out: it runs twice per message, and
    asgiref's ``sync_to_async`` or even ``run_in_executor`` (chained concurrent and asyncio futures)
    cost a measurable share of the listener's time per message (bench/hl7, docs/ingest.md)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._started = threading.Lock()
        self._thread: threading.Thread | None = None

    async def call(self, fn, *args):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._submit(fn, args, lambda result, exc: loop.call_soon_threadsafe(_settle, future, result, exc))
        return await future

    def call_blocking(self, fn, *args, timeout: float = 10):
        """From another thread (tests): run ``fn`` in the inbox thread and wait for it."""
        done = Future()
        self._submit(
            fn, args, lambda result, exc: done.set_exception(exc) if exc else done.set_result(result)
        )
        return done.result(timeout)

    def _submit(self, fn, args, done) -> None:
        with self._started:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
        self._jobs.put((fn, args, done))

    def _work(self) -> None:
        while True:
            fn, args, done = self._jobs.get()
            try:
                result = fn(*args)
            except Exception as exc:  # handed to the awaiting coroutine, which decides
                done(None, exc)
            else:
                done(result, None)


def _settle(future: asyncio.Future, result, exc: BaseException | None) -> None:
    if future.cancelled():  # the connection went away while its frame was being stored
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class InlineInbox:
    """The inbox's database work in the event loop's own thread, for ``manage.py hl7_listener``: a
    process whose loop serves nothing but MLLP. The inbox is one writer either way (frames are
    stored one at a time); what this saves is the two thread hand-offs per message, a fifth of an
    ACK's round trip on two cores (bench/hl7: ~980 -> ~1,230 messages/s). A store blocks the loop
    for its one INSERT, which is also what every other connection would wait for in the inbox
    thread. Never in the embedded server, whose loop also serves the web pages and the SCP.
    Django refuses database calls from a thread running an event loop unless
    DJANGO_ALLOW_ASYNC_UNSAFE is set: the command sets it for its process, where this thread is the
    only one that touches the database and no call spans an ``await``.

    Every call runs in one context of its own: in a thread running an event loop, Django keeps a
    database connection per asyncio task (asgiref's Local follows contextvars there), so without
    it each MLLP connection and the drain scheduler would open their own and leave them to the
    garbage collector. One context, one connection — the same as the inbox thread's."""

    def __init__(self) -> None:
        self._context = contextvars.Context()

    async def call(self, fn, *args):
        return self._context.run(fn, *args)

    def connections_close(self) -> None:
        """Close this inbox's database connection (tests; otherwise the process's exit does)."""
        self._context.run(connections.close_all)


Inbox = InboxThread | InlineInbox
_INBOX_THREAD = InboxThread("hl7-inbox")


@dataclass(frozen=True)
class Frame:
    data: bytes  # inside the MLLP envelope (only the head when oversize)
    oversize: int = 0  # the full size when the frame exceeded the limit


class FrameReader(HL7StreamReader):
    """``readblock`` of python-hl7 clears its buffer on an oversize frame and leaves the rest of
    that frame to be misread as the next one; this reader discards exactly up to the frame's end
    (it works on the same StreamReader buffer python-hl7's own readblock uses)."""

    async def read_frame(self) -> Frame | None:
        try:
            # up to <FS> only: some senders end the frame without its <CR> and wait for the ACK;
            # the <CR>, when it comes, is dropped here or before the next <VT>
            block = await self.readuntil(END_BLOCK)
            if self._buffer[:1] == CARRIAGE_RETURN:
                del self._buffer[:1]
            block += CARRIAGE_RETURN
        except IncompleteReadError as exc:
            if exc.partial.strip():
                log.warning("connection closed inside a frame (%d bytes lost in transit)", len(exc.partial))
            return None
        except LimitOverrunError:
            return await self._discard_oversize()
        start = block.rfind(START_BLOCK)
        if start < 0:
            # no <VT>: not MLLP. Answer it (the sender learns something is wrong) and go on.
            return Frame(data=block[: -len(FRAME_END)])
        return Frame(data=block[start + 1 : -len(FRAME_END)])

    async def _discard_oversize(self) -> Frame:
        head = bytes(self._buffer[: self._limit])
        framed = head.startswith(START_BLOCK)
        head = head[1:] if framed else head
        size = -1 if framed else 0  # the frame's size counts what is inside <VT> … <FS><CR>
        while True:
            end = self._buffer.find(FRAME_END)
            if end >= 0:
                size += end
                del self._buffer[: end + len(FRAME_END)]
                self._maybe_resume_transport()
                return Frame(data=head, oversize=size)
            keep = len(FRAME_END) - 1  # the terminator may be split across reads
            size += max(len(self._buffer) - keep, 0)
            del self._buffer[: max(len(self._buffer) - keep, 0)]
            self._maybe_resume_transport()
            if self._eof:
                return Frame(data=head, oversize=size)
            await self._wait_for_data("read_frame")


def _receive(frame: Frame, peer: str):
    try:
        return hl7_frame_receive(raw=frame.data, peer=peer, oversize=frame.oversize)
    except DatabaseError:
        # Could not store it: never ACK what is not stored. AE 207 makes the engine resend.
        log.exception("HL7 inbox unavailable")
        close_old_connections()
        return None


def _enqueue(senders: set[tuple[str, str]]) -> None:
    from interfaces.tasks import hl7_inbound_drain_task

    try:
        for sender in senders:
            hl7_inbound_drain_task.delay(*sender)
    except DatabaseError:
        # tasks applied inline (embedded) share the inbox's connection: drop it if it broke, so the
        # next frame is stored on a new one (the sweep applies what this left behind)
        close_old_connections()
        raise


class DrainScheduler:
    """Asks for the apply task after the ACK has gone out, off the connection's path.

    Senders whose messages committed while an enqueue was in flight are gathered and enqueued once:
    every message still gets a drain enqueued *after* its commit (so none is left behind), without
    a broker round trip per message. In the embedded topology tasks run inline on SQLite, which
    takes one writer at a time: there the drain runs in Django's one sync thread, like the INSERT."""

    def __init__(self, inbox: Inbox) -> None:
        self._pending: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._inline = settings.CELERY_TASK_ALWAYS_EAGER
        self._inbox = inbox

    def request(self, sender: tuple[str, str]) -> None:
        self._pending.add(sender)
        self._wake.set()

    # Gather for this long before enqueueing: one broker call per burst instead of one per message.
    # A Celery publish costs ~1-2 ms of Python holding the GIL, taken from the inbox thread: at
    # 0.02 s the listener spent more CPU enqueueing than storing on a loaded machine (bench/hl7
    # profile, docs/ingest.md). At 0.1 s it is at most 10 publishes a second whatever the rate,
    # and a drain already running picks up what arrives meanwhile. Applying starts at most this late.
    GATHER_SECONDS = 0.1

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.GATHER_SECONDS)
            self._wake.clear()
            senders, self._pending = self._pending, set()
            try:
                if self._inline:  # tasks run inline: they write to the same database as the inbox
                    await self._inbox.call(_enqueue, senders)
                else:
                    await asyncio.get_running_loop().run_in_executor(None, _enqueue, senders)
            except Exception:  # the broker is down: the sweep re-drains what stays unapplied
                log.exception("could not enqueue HL7 apply tasks for %s", senders)


class PeerConnections:
    """Connections open per remote address, in this listener process. An interface engine holds one
    or a few; one address opening more is a misconfigured retry loop or an attack, and would
    otherwise take every file descriptor the listener has from every other hospital."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def admit(self, host: str) -> bool:
        if self._open[host] >= self.limit:
            return False
        self._open[host] += 1
        return True

    def release(self, host: str) -> None:
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]


class SenderPace:
    """Per-sender message pace (``Facility.hl7_max_messages_per_minute``), in this listener process:
    MLLP is one message, then its ACK, then the next, so reading a sender's next frame later slows
    it without refusing anything — what is sent is stored and ACKed, only later. Messages of one
    sender are spaced 60/rate seconds apart, across all its connections; no burst allowance: a
    backlog after an outage drains at the rate, which is what the limit is for."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, str], float] = {}

    def delay(self, sender: tuple[str, str], per_minute: int | None) -> float:
        """Seconds to wait before reading this sender's next frame (and reserve that slot)."""
        if not per_minute:
            return 0.0
        now = time.monotonic()
        self._next[sender] = max(now, self._next.get(sender, now)) + 60.0 / per_minute
        return self._next[sender] - now


async def _serve_connection(
    reader: FrameReader,
    writer,
    drains: DrainScheduler,
    inbox: Inbox,
    peers: PeerConnections,
    pace: SenderPace,
) -> None:
    host, port = (writer.get_extra_info("peername") or ("?", 0))[:2]
    peer = f"{host}:{port}"
    if not peers.admit(host):
        # closed before a byte is read: there is no message to answer yet (docs/interfaces-hardening.md)
        log.warning("HL7 connection from %s closed: %d connections from %s open", peer, peers.limit, host)
        writer.close()
        return
    log.info("HL7 connection from %s", peer)
    try:
        while (frame := await reader.read_frame()) is not None:
            receipt = await inbox.call(_receive, frame, peer)
            if receipt is None:
                if (refusal := hl7_unavailable_ack(frame.data)) is not None:
                    writer.writeblock(refusal)
            elif receipt.ack is not None:
                writer.writeblock(receipt.ack)
            await writer.drain()
            if receipt is not None and receipt.to_apply:
                drains.request(receipt.sender)
            if receipt is not None and receipt.close:
                break  # a sender outside its allow-list: answered AR, and no further frame is read
            if receipt is not None and (wait := pace.delay(receipt.sender, receipt.messages_per_minute)):
                await asyncio.sleep(wait)  # the sender's pace: its next frame is read later
    except (ConnectionError, OSError) as exc:
        log.info("HL7 connection from %s ended: %s", peer, exc)
    finally:
        peers.release(host)
        writer.close()
        log.info("HL7 connection from %s closed", peer)


@dataclass
class Hl7Listener:
    server: asyncio.AbstractServer
    drain_scheduler: asyncio.Task  # kept referenced for the server's lifetime

    async def close(self) -> None:
        self.server.close()
        self.drain_scheduler.cancel()
        await asyncio.gather(self.drain_scheduler, return_exceptions=True)


async def hl7_server_start(
    host: str,
    port: int,
    *,
    max_frame_bytes: int | None = None,
    inbox: Inbox = _INBOX_THREAD,
    listening: socket.socket | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Hl7Listener:
    """``listening``: a socket bound by the supervisor (``hl7_listener --processes N``), served
    instead of binding ``host:port``. ``ssl_context``: MLLP over TLS on this port."""
    loop = asyncio.get_running_loop()
    limit = max_frame_bytes or settings.READROOM_HL7_MAX_FRAME_BYTES
    drains = DrainScheduler(inbox)
    scheduler = loop.create_task(drains.run(), name="hl7-drain-scheduler")
    peers = PeerConnections(settings.READROOM_HL7_MAX_CONNECTIONS_PER_PEER)
    pace = SenderPace()

    def factory() -> HL7StreamProtocol:
        reader = FrameReader(limit=limit, loop=loop)
        return HL7StreamProtocol(
            reader, lambda r, w: _serve_connection(r, w, drains, inbox, peers, pace), loop=loop
        )

    # a client that connects and never completes the handshake is dropped after this long
    tls = {"ssl": ssl_context, "ssl_handshake_timeout": 10.0} if ssl_context else {}
    if listening is not None:
        server = await loop.create_server(factory, sock=listening, **tls)
    else:
        server = await loop.create_server(factory, host, port, reuse_address=True, **tls)
    return Hl7Listener(server, scheduler)


async def hl7_listener_service(
    stop: asyncio.Event,
    *,
    host: str | None = None,
    port: int | None = None,
    inbox: Inbox = _INBOX_THREAD,
    listening: socket.socket | None = None,
) -> None:
    """Run until ``stop`` is set (the embedded server and ``manage.py hl7_listener`` both use it)."""
    listener = await hl7_server_start(
        host or settings.READROOM_LISTEN_HOST,
        port or settings.READROOM_HL7_PORT,
        inbox=inbox,
        listening=listening,
        ssl_context=hl7_server_tls_context(),
    )
    log.info("HL7 MLLP listening on %s", ", ".join(str(s.getsockname()) for s in listener.server.sockets))
    try:
        await stop.wait()
    finally:
        await listener.close()


def hl7_server_tls_context() -> ssl.SSLContext | None:
    """The listener's TLS context from the settings (None: plain MLLP)."""
    return server_tls_context(
        settings.READROOM_HL7_TLS_CERT_FILE,
        settings.READROOM_HL7_TLS_KEY_FILE,
        settings.READROOM_HL7_TLS_CA_FILE,
    )
