"""Liveness and readiness for load balancers and the operations desk.

``/healthz``: the process answers. ``/readyz``: it can do its work — the database answers, the
broker answers (or tasks run inline in the embedded topology) and a message makes a round trip
through the channel layer. 503 with the failing part named otherwise."""

from __future__ import annotations

import asyncio
import logging

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

log = logging.getLogger(__name__)


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _broker() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER and not settings.REDIS_URL:
        return "inline (embedded)"
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()
    return "redis"


async def _channel_layer_roundtrip() -> str:
    layer = get_channel_layer()
    channel = await layer.new_channel("readyz.")
    await layer.send(channel, {"type": "readyz.ping"})
    message = await asyncio.wait_for(layer.receive(channel), timeout=2)
    if message.get("type") != "readyz.ping":
        raise RuntimeError("channel layer returned a different message")
    return type(layer).__name__


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    ready = True
    for name, check in (
        ("database", _database),
        ("broker", _broker),
        ("channel_layer", async_to_sync(_channel_layer_roundtrip)),
    ):
        try:
            checks[name] = f"ok: {check()}"
        except Exception as exc:  # readiness reports every failure instead of raising
            log.warning("readyz: %s failed: %s", name, exc)
            checks[name] = f"failed: {type(exc).__name__}: {exc}"
            ready = False
    return JsonResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )
