"""Liveness and readiness for load balancers and the operations desk.

``/healthz``: the process answers and can still get a database connection within 2 s — from the
web pool when the process pools (a web tier whose pool is exhausted or whose database is gone is not
healthy, issue 15 §2). ``/readyz``: it can do its work — the database answers, the
broker and the channel layer's Redis answer a PING (or run in-process in the embedded topology) and
the image storage takes a write. 503 otherwise, with ``status`` "down" (no database) or "degraded"
and the failing parts named in ``reason``."""

from __future__ import annotations

import logging
import os
import secrets
import socket

import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from imaging.storage import (
    StorageError,
    encrypted_delete,
    encrypted_read,
    encrypted_write,
    object_store_configured,
)

log = logging.getLogger(__name__)


HEALTH_DB_TIMEOUT = 2.0  # seconds a health probe waits for a pooled connection
READY_TIMEOUT = 1.0  # seconds a readiness probe waits for each Redis answer


def _database_connection_available() -> None:
    """A connection the way a request would get one: from the pool (with a short wait) or new."""
    pool = getattr(connection, "pool", None)
    if pool is None:
        _database()
        return
    pool.open()  # idempotent; Django opens it on the first request
    with pool.connection(timeout=HEALTH_DB_TIMEOUT) as pooled:
        pooled.execute("SELECT 1").fetchone()


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        _database_connection_available()
    except Exception as exc:  # the probe reports the failure instead of raising
        log.warning("healthz: database failed: %s", exc)
        return JsonResponse({"status": "failing", "database": f"failed: {type(exc).__name__}"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _redis_ping(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=READY_TIMEOUT, socket_timeout=READY_TIMEOUT)
    try:
        client.ping()
    finally:
        client.close()


def _broker() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER and not settings.REDIS_URL:
        return "inline (embedded)"
    _redis_ping(settings.CELERY_BROKER_URL)
    return "redis"


def _channel_layer() -> str:
    """A PING of each of the channel layer's Redis hosts. Not a message round trip through the
    layer: that waited behind the live sockets' own receive loop, so under load it timed out while
    websockets were working (issue 15 §4 — half the calls were false outages)."""
    layer = get_channel_layer()
    hosts = getattr(layer, "hosts", None)
    if hosts is None:
        return type(layer).__name__  # in-process (embedded, tests): nothing to reach
    for host in hosts:
        _redis_ping(host["address"])
    return f"{type(layer).__name__}, {len(hosts)} host(s)"


def _storage() -> str:
    """Images can be stored: a small encrypted probe written, read back and deleted, where the
    SCP and STOW write (the directory, or the S3-API bucket)."""
    path = f"readyz/{socket.gethostname()}-{os.getpid()}.probe"
    payload = secrets.token_bytes(16)
    encrypted_write(path, payload)
    try:
        if encrypted_read(path) != payload:
            raise StorageError("the probe read back differs")
    finally:
        encrypted_delete(path)
    return "s3" if object_store_configured() else "directory"


# Without the database nothing works ("down"); without Redis or storage some of the work cannot be
# done ("degraded": live events, tasks or new images). Either way the node is not ready: 503.
READY_CHECKS = (
    ("database", _database),
    ("broker", _broker),
    ("channel_layer", _channel_layer),
    ("storage", _storage),
)
ESSENTIAL = frozenset({"database"})


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness, separate from liveness (``healthz``): may a load balancer send work here?"""
    checks: dict[str, str] = {}
    failed: list[str] = []
    for name, check in READY_CHECKS:
        try:
            checks[name] = f"ok: {check()}"
        except Exception as exc:  # readiness reports every failure instead of raising
            log.warning("readyz: %s failed: %s", name, exc)
            checks[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
            failed.append(name)
    if not failed:
        return JsonResponse({"status": "ready", "checks": checks})
    status = "down" if ESSENTIAL & set(failed) else "degraded"
    reason = "; ".join(f"{name} {checks[name]}" for name in failed)
    return JsonResponse({"status": status, "reason": reason, "checks": checks}, status=503)
