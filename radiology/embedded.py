"""The embedded topology: the whole system in one process and one event loop (DESIGN.md §2).

Web + websockets (uvicorn), the periodic ticker and — as the ingest issue lands — the HL7 listener,
the DICOM SCP and the facility simulator run side by side. Celery tasks execute inline and
Channels uses its in-memory layer, which is only correct because everything shares this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import uvicorn
from celery import current_app

from radiology.schedule import PERIODIC_TASKS

log = logging.getLogger(__name__)

# Long-running coroutines that join the embedded process; each takes the shared stop event.
EmbeddedService = Callable[[asyncio.Event], Awaitable[None]]


async def periodic_ticker(stop: asyncio.Event) -> None:
    """Beat's schedule, run in-process: each task in a worker thread so the loop keeps serving."""
    current_app.loader.import_default_modules()  # task modules are found lazily outside a worker
    loop = asyncio.get_running_loop()
    period = {name: entry.embedded_period.total_seconds() for name, entry in PERIODIC_TASKS.items()}
    next_run = {name: loop.time() + period[name] for name in PERIODIC_TASKS}
    while not stop.is_set():
        now = loop.time()
        for name, entry in PERIODIC_TASKS.items():
            if now >= next_run[name]:
                next_run[name] = now + period[name]
                try:
                    await asyncio.to_thread(current_app.tasks[entry.task].apply)
                except Exception:  # one failing task must not stop the others
                    log.exception("periodic task %s failed", name)
        wait = max(0.0, min(next_run.values()) - loop.time()) if next_run else 60.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=min(wait, 60.0))


async def run(host: str, port: int, services: list[EmbeddedService], on_ready: Callable[[], None]) -> None:
    config = uvicorn.Config(
        "radiology.asgi:application", host=host, port=port, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    stop = asyncio.Event()

    async def announce_when_started() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.05)
        if server.started:
            on_ready()

    async def web() -> None:
        try:
            await server.serve()
        finally:
            stop.set()  # Ctrl-C reaches uvicorn first; the other services follow it down

    await asyncio.gather(web(), announce_when_started(), *(service(stop) for service in services))
