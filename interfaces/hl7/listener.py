"""The HL7 MLLP listener: python-hl7's asyncio streams, persistent connections, many senders.

Per frame: store it and decide the ACK (one committed INSERT, in Django's sync thread), write the
ACK, then enqueue the apply task. A frame over the size limit, a frame without its start byte or
random bytes are answered and recorded, and the connection goes on serving the next frame."""

from __future__ import annotations

import asyncio
import logging
from asyncio import IncompleteReadError, LimitOverrunError
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK, HL7StreamProtocol, HL7StreamReader

from interfaces.hl7.ack import build_ack
from interfaces.hl7.inbound import hl7_frame_receive
from interfaces.hl7.parse import APPLICATION_INTERNAL_ERROR

log = logging.getLogger(__name__)
FRAME_END = END_BLOCK + CARRIAGE_RETURN
# One thread does the inbox's database work, for every connection: writes keep their order, there
# is one database connection, and (embedded, SQLite) one writer. A plain executor hop is much
# cheaper than asgiref's on a path that runs once per message.
_INBOX_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hl7-inbox")


async def _in_inbox_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(_INBOX_THREAD, fn, *args)


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
            block = await self.readuntil(FRAME_END)
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

    for sender in senders:
        hl7_inbound_drain_task.delay(*sender)


class DrainScheduler:
    """Asks for the apply task after the ACK has gone out, off the connection's path.

    Senders whose messages committed while an enqueue was in flight are gathered and enqueued once:
    every message still gets a drain enqueued *after* its commit (so none is left behind), without
    a broker round trip per message. In the embedded topology tasks run inline on SQLite, which
    takes one writer at a time: there the drain runs in Django's one sync thread, like the INSERT."""

    def __init__(self) -> None:
        self._pending: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._inline = settings.CELERY_TASK_ALWAYS_EAGER

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
                    await _in_inbox_thread(_enqueue, senders)
                else:
                    await asyncio.get_running_loop().run_in_executor(None, _enqueue, senders)
            except Exception:  # the broker is down: the sweep re-drains what stays unapplied
                log.exception("could not enqueue HL7 apply tasks for %s", senders)


async def _serve_connection(reader: FrameReader, writer, drains: DrainScheduler) -> None:
    host, port = (writer.get_extra_info("peername") or ("?", 0))[:2]
    peer = f"{host}:{port}"
    log.info("HL7 connection from %s", peer)
    try:
        while (frame := await reader.read_frame()) is not None:
            receipt = await _in_inbox_thread(_receive, frame, peer)
            if receipt is None:
                writer.writeblock(
                    build_ack(
                        None, "AE", error_code=APPLICATION_INTERNAL_ERROR, error_text="inbox unavailable"
                    )
                )
            elif receipt.ack is not None:
                writer.writeblock(receipt.ack)
            await writer.drain()
            if receipt is not None and receipt.to_apply:
                drains.request(receipt.sender)
    except (ConnectionError, OSError) as exc:
        log.info("HL7 connection from %s ended: %s", peer, exc)
    finally:
        writer.close()
        log.info("HL7 connection from %s closed", peer)


async def hl7_server_start(
    host: str, port: int, *, max_frame_bytes: int | None = None
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    limit = max_frame_bytes or settings.READROOM_HL7_MAX_FRAME_BYTES
    drains = DrainScheduler()
    scheduler = loop.create_task(drains.run(), name="hl7-drain-scheduler")

    def factory() -> HL7StreamProtocol:
        reader = FrameReader(limit=limit, loop=loop)
        return HL7StreamProtocol(reader, lambda r, w: _serve_connection(r, w, drains), loop=loop)

    server = await loop.create_server(factory, host, port, reuse_address=True)
    server.drain_scheduler = scheduler  # kept referenced for the server's lifetime
    return server


async def hl7_listener_service(
    stop: asyncio.Event, *, host: str | None = None, port: int | None = None
) -> None:
    """Run until ``stop`` is set (the embedded server and ``manage.py hl7_listener`` both use it)."""
    server = await hl7_server_start(host or settings.READROOM_LISTEN_HOST, port or settings.READROOM_HL7_PORT)
    log.info("HL7 MLLP listening on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
    try:
        async with server:
            await stop.wait()
    finally:
        server.drain_scheduler.cancel()
