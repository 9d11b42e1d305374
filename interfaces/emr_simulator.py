"""The hospitals' EMR for the demo: one MLLP server on a local port that takes the ORU^R01 reports
ReadRoom's outbox sends and acknowledges each one, so a report signed in the demo is delivered and
shows as acknowledged on the interfaces page (the demo facilities' ORU host/port point here).

It answers like a well-behaved interface engine in original mode (IHE RAD): AA for a readable
ORU^R01, AR with a table 0357 code for anything else, MSA-2 echoing MSH-10, MSH-3/MSH-4 of the ACK
being the MSH-5/MSH-6 the report was addressed to. Protocol only: it keeps nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator

from hl7.mllp.streams import HL7StreamProtocol

from interfaces.hl7.ack import ack_code_for, build_ack
from interfaces.hl7.listener import FrameReader
from interfaces.hl7.parse import UNSUPPORTED_MESSAGE_TYPE, Hl7Error, decode, read_header

log = logging.getLogger(__name__)

EMR_SIMULATOR_HOST = "127.0.0.1"  # the simulator is part of the demo process: never reachable from outside
EMR_NAME = ("EMR_SIM", "EMR_SIM")  # who answers when the report named no receiver


def emr_answer(raw: bytes) -> tuple[bytes | None, str]:
    """The ACK (unframed; None when MSH-15 asks for none) for one received frame, and a line for the log."""
    try:
        header = read_header(decode(raw))
    except Hl7Error as exc:
        ack = build_ack(None, "AR", error_code=exc.code, error_text=exc.text, error_location=exc.location)
        return ack, f"rejected an unreadable frame: {exc.text}"
    responder = (header.receiving_application or EMR_NAME[0], header.receiving_facility or EMR_NAME[1])
    if header.message_type != "ORU^R01":
        text = f"{header.message_type} is not a result message"
        code = ack_code_for(header, "AR")
        ack = build_ack(
            header, code, error_code=UNSUPPORTED_MESSAGE_TYPE, error_text=text, responder=responder
        )
        return (ack if code else None), f"rejected {header.control_id}: {text}"
    code = ack_code_for(header, "AA")
    ack = build_ack(header, code, responder=responder) if code else None
    return ack, f"{responder[1]} acknowledged ORU^R01 {header.control_id} ({code or 'no ACK wanted'})"


async def _serve_connection(reader: FrameReader, writer, received: list[bytes] | None = None) -> None:
    try:
        while (frame := await reader.read_frame()) is not None:
            if received is not None:  # a test (or a demo operator) watching what arrived
                received.append(bytes(frame.data))
            ack, line = emr_answer(frame.data)
            log.info("EMR simulator: %s", line)
            if ack is not None:
                writer.writeblock(ack)
                await writer.drain()
    except (ConnectionError, OSError) as exc:
        log.info("EMR simulator connection ended: %s", exc)
    finally:
        writer.close()


async def emr_simulator_start(
    host: str, port: int, *, received: list[bytes] | None = None
) -> asyncio.AbstractServer:
    """Serve on ``host:port``; with ``received``, every frame is appended to it as it arrives."""
    loop = asyncio.get_running_loop()

    async def serve(reader: FrameReader, writer) -> None:
        await _serve_connection(reader, writer, received)

    def factory() -> HL7StreamProtocol:
        return HL7StreamProtocol(FrameReader(limit=2**20, loop=loop), serve, loop=loop)

    return await loop.create_server(factory, host, port, reuse_address=True)


async def emr_simulator_service(stop: asyncio.Event, *, port: int, host: str = EMR_SIMULATOR_HOST) -> None:
    """Run until ``stop`` is set (``run_embedded --simulate`` starts it beside the facility simulator)."""
    server = await emr_simulator_start(host, port)
    log.info("EMR simulator listening on %s:%s", host, port)
    async with server:
        await stop.wait()


@contextlib.contextmanager
def emr_simulator_running(port: int, host: str = EMR_SIMULATOR_HOST) -> Iterator[bool]:
    """The EMR simulator in a thread of its own for the length of the block: ``load_demo`` signs the
    demo's earlier reads, and their ORUs go out at once — with nobody listening, each logs a
    "Connection refused" warning and waits for a retry (issue 19). Yields False, serving nothing,
    when the port is taken: an EMR simulator (``run_embedded --simulate``) is already there."""
    # The server is started on its own thread's loop, not run_until_complete here: the caller's
    # thread may already run a loop (load_demo under Playwright's sync API in the browser tests).
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="emr-simulator", daemon=True)
    thread.start()
    try:
        server = asyncio.run_coroutine_threadsafe(emr_simulator_start(host, port), loop).result(10)
    except OSError:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        yield False
        return
    try:
        yield True
    finally:
        asyncio.run_coroutine_threadsafe(_shutdown(server), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _shutdown(server: asyncio.AbstractServer) -> None:
    """Stop listening and end the connections still open (the outbox keeps its connection)."""
    server.close()
    connections = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in connections:
        task.cancel()
    await asyncio.gather(*connections, return_exceptions=True)
