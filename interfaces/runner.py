"""Run one edge service (HL7 listener, DICOM SCP) as its own process until SIGINT/SIGTERM, or as
N supervised processes on one port (interfaces.supervisor)."""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Awaitable, Callable, Coroutine

import uvloop
from django.db import DEFAULT_DB_ALIAS, connections

from interfaces.supervisor import Supervisor, listening_socket


def event_loop_run(main: Coroutine) -> None:
    """Run a process's event loop on uvloop, as uvicorn runs the web: the HL7 listener spends most of
    its own time per message in the loop and its thread hops, and uvloop's cost about 0.1 ms less
    per message than asyncio's (bench/hl7: 930 -> 970 messages/s)."""
    uvloop.run(main)


async def run_until_signalled(service: Callable[..., Awaitable[None]], host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service(stop, host=host, port=port)


def edge_service_run(
    service: Callable[..., Awaitable[None]],
    *,
    name: str,
    host: str,
    port: int,
    processes: int = 1,
    stop_grace_seconds: float = 20.0,
    process_setup: Callable[[], None] | None = None,
    on_child_died: Callable[[int], None] | None = None,
) -> None:
    """``service(stop, host=, port=)`` in this process (``processes`` 1), or in ``processes``
    supervised children serving one socket bound here, each given it as ``listening=``.
    ``process_setup()`` runs first in each serving process (this one, or each child after its
    fork: e.g. its database pool, which the parent must not have); ``on_child_died(pid)`` in the
    parent for each child that ended (``Supervisor``)."""
    if processes <= 1:
        if process_setup is not None:
            process_setup()
        event_loop_run(run_until_signalled(service, host, port))
        return
    sock = listening_socket(host, port)

    def child(listening) -> None:
        if process_setup is not None:
            process_setup()
        event_loop_run(run_until_signalled(functools.partial(service, listening=listening), host, port))

    Supervisor(
        name=name,
        sock=sock,
        processes=processes,
        child_main=child,
        stop_grace_seconds=stop_grace_seconds,
        on_child_died=on_child_died,
    ).run()


def database_pool_enable(max_size: int, *, timeout: float = 10.0) -> bool:
    """Pool this process's PostgreSQL connections (Django's ``pool`` option, psycopg_pool) for
    services that run each unit of work in a new thread: pynetdicom starts a thread per
    association, so without a pool every association opened (and closed) a PostgreSQL session.
    Must run before the first connection; each process makes its own pool on first use, so a
    forked child never shares its parent's. Django's pool checks a connection when it is taken
    (psycopg_pool's ``check_connection``): one the server dropped (a PostgreSQL restart) is
    replaced, not handed to an association to fail its first C-STORE. False when the database
    is not PostgreSQL or a pool is already configured."""
    database = connections.settings[DEFAULT_DB_ALIAS]
    options = database.setdefault("OPTIONS", {})
    if not database["ENGINE"].endswith("postgresql") or options.get("pool"):
        return False
    database["CONN_MAX_AGE"] = 0  # pooled connections go back to the pool instead
    options["pool"] = {
        "min_size": min(2, max_size),
        "max_size": max_size,
        "timeout": timeout,
    }
    return True
