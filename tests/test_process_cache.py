"""The Redis cache keeps one connection pool per process (radiology/process_cache.py): Django builds a
cache object per request context, and each used to bring its own pool — a new Redis connection per
request (issue 16)."""

from __future__ import annotations

import contextvars
import threading

import pytest
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis cache needs REDIS_URL")


def _cache_in_a_new_context():
    # what an ASGI request gets: a fresh context, so a fresh object from ``caches``
    return contextvars.Context().run(lambda: caches[DEFAULT_CACHE_ALIAS])


def test_every_requests_cache_object_shares_the_processs_connections():
    first, second = _cache_in_a_new_context(), _cache_in_a_new_context()
    # Django's contract holds: one object per context
    assert first is not second
    first.set("process-cache-probe", 41)
    assert second.get("process-cache-probe") == 41
    # and both use one client and one pool, so the second connected to nothing new
    assert first._cache is second._cache
    pool = first._cache._get_connection_pool(write=True)
    assert second._cache._get_connection_pool(write=False) is pool
    created = pool._created_connections
    for _ in range(20):
        _cache_in_a_new_context().get("process-cache-probe")
    assert pool._created_connections == created


def test_threads_asking_at_once_build_one_pool():
    from radiology.process_cache import _SharedPoolClient

    client = _SharedPoolClient([settings.REDIS_URL])
    pools, start = [], threading.Barrier(8)

    def ask():
        start.wait()
        pools.append(client._get_connection_pool(write=True))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pools) == 8 and len({id(p) for p in pools}) == 1
