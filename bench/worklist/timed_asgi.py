"""uvicorn's application for ``bench/worklist --http --server-timing``: ReadRoom's ASGI application,
unchanged, with where each HTTP request's time went inside the web worker written down.

The bench's clients see a request's whole latency. This splits the server's part of it, per request:
- **in the app**: from uvicorn handing the parsed request to the application to the last byte sent;
- **to the thread**: from there to the moment a pool thread starts running the synchronous
  middleware and view (the event loop's and the executor's wait);
- **thread wall / thread CPU**: the time in those threads and the CPU they used (``thread_time``);
- **queries**: the wall time of the SQL statements (Django's ``execute_wrapper``), network wait and
  the GIL's re-acquisition after it included.

In the thread, wall − CPU − queries is time spent runnable but waiting for the GIL (other requests,
the event loop, the websockets). Measuring only: a record per request is appended to
``$READROOM_DATA_DIR/server-timing-<pid>.jsonl``; nothing the product does is changed."""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import os
import time
from pathlib import Path

from asgiref.sync import SyncToAsync

_request: contextvars.ContextVar[dict | None] = contextvars.ContextVar("bench_request", default=None)
_out = (Path(os.environ["READROOM_DATA_DIR"]) / f"server-timing-{os.getpid()}.jsonl").open("a", buffering=1)


def _timed(func):
    """``func`` as it runs in its pool thread, its wall, CPU and SQL time added to the request's
    record (the contextvar: asgiref runs ``func`` inside the request's context)."""
    if getattr(func, "_bench_timed", False):
        return func

    @functools.wraps(func)
    def run(*args, **kwargs):
        record = _request.get()
        if record is None or record["depth"]:  # a nested adapter: its time is its caller's
            return func(*args, **kwargs)
        from django.db import connection

        started, cpu = time.perf_counter(), time.thread_time()
        record.setdefault("thread_start", started)

        def query(execute, sql, params, many, context):
            begun = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                spent = time.perf_counter() - begun
                record["queries"] += spent
                record["n_queries"] += 1
                key = _statement_key(sql)
                record["sql"][key] = record["sql"].get(key, 0.0) + spent * 1000

        record["depth"] += 1
        try:
            with connection.execute_wrapper(query):
                return func(*args, **kwargs)
        finally:
            record["depth"] -= 1
            record["thread_wall"] += time.perf_counter() - started
            record["thread_cpu"] += time.thread_time() - cpu

    run._bench_timed = True  # type: ignore[attr-defined]
    return run


_keys: dict[str, str] = {}
_statements = (Path(os.environ["READROOM_DATA_DIR"]) / f"server-sql-{os.getpid()}.jsonl").open(
    "a", buffering=1
)


def _statement_key(sql: str) -> str:
    """A short key for a statement's text, its text written once per process (the report names it)."""
    key = _keys.get(sql)
    if key is None:
        key = _keys[sql] = hashlib.blake2s(sql.encode(), digest_size=4).hexdigest()
        _statements.write(json.dumps({"key": key, "sql": sql[:400]}) + "\n")
    return key


_init = SyncToAsync.__init__


@functools.wraps(_init)
def _init_timed(self, func, *args, **kwargs):
    _init(self, _timed(func), *args, **kwargs)


SyncToAsync.__init__ = _init_timed  # before Django builds its middleware adapters

from radiology.asgi import application as _application  # noqa: E402


async def application(scope, receive, send):
    if scope["type"] != "http":
        return await _application(scope, receive, send)
    record = {
        "path": scope["path"],
        "depth": 0,
        "thread_wall": 0.0,
        "thread_cpu": 0.0,
        "queries": 0.0,
        "n_queries": 0,
        "sql": {},
    }
    token = _request.set(record)
    started = time.perf_counter()
    try:
        await _application(scope, receive, send)
    finally:
        _request.reset(token)
        ended = time.perf_counter()
        _out.write(
            json.dumps(
                {
                    "path": record["path"],
                    "at": time.time(),
                    "app": (ended - started) * 1000,
                    "to_thread": (record.get("thread_start", ended) - started) * 1000,
                    "thread_wall": record["thread_wall"] * 1000,
                    "thread_cpu": record["thread_cpu"] * 1000,
                    "queries": record["queries"] * 1000,
                    "n_queries": record["n_queries"],
                    "sql": record["sql"],
                }
            )
            + "\n"
        )
