"""A Redis cache whose connection pool is the process's, not the request's.

Django keeps its cache objects per request context: ``django.core.cache.caches`` is an asgiref
``Local`` that is not thread-critical, so under ASGI every request (its own context) builds a new
``RedisCache``, and with it a new ``RedisCacheClient`` with its own, empty connection pool — every
request that touched the cache connected to Redis anew (socket, handshake, redis-py's ``CLIENT
SETINFO``): ~30 % of a web worker's samples on the viewer's Django path (issue 16). The DICOMweb fast
path worked around it with one cache object of its own (``interfaces.dicom.web_signin``); this
backend fixes it for every user of ``caches``: the cache objects stay per context (Django's contract),
but they share one client — one pool per server — per process, keyed by what configures it.

redis-py's ``ConnectionPool`` is thread-safe (a lock around its free list; each command takes a
connection and gives it back), and the shared client builds each pool once, under a lock. A forked
child (Celery's prefork pool) gets a fresh pool: redis-py's pool checks its pid on every checkout."""

from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property

_LOCK = threading.Lock()
_CLIENTS: dict[tuple, RedisCacheClient] = {}


class _SharedPoolClient(RedisCacheClient):
    """Django's client, building each server's pool once under a lock (two threads asking at once
    would otherwise each build one, and one would be dropped with its connections)."""

    def _get_connection_pool(self, write):
        index = self._get_connection_pool_index(write)
        pool = self._pools.get(index)
        if pool is None:
            with _LOCK:
                pool = self._pools.get(index)
                if pool is None:
                    pool = self._pools[index] = self._pool_class.from_url(
                        self._servers[index], **self._pool_options
                    )
        return pool


def shared_client(servers: list[str], options: dict) -> RedisCacheClient:
    """The process's client for these servers and options (created on first use)."""
    key = (tuple(servers), repr(sorted(options.items())))
    client = _CLIENTS.get(key)
    if client is None:
        with _LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                client = _CLIENTS[key] = _SharedPoolClient(servers, **options)
    return client


class ProcessRedisCache(RedisCache):
    """``django.core.cache.backends.redis.RedisCache`` over the process's shared client."""

    @cached_property
    def _cache(self):
        return shared_client(self._servers, self._options)
