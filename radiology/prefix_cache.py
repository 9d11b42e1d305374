"""A Redis cache whose ``clear()`` removes only its own keys (those under its KEY_PREFIX).

Django's ``RedisCache.clear()`` is FLUSHDB: the whole Redis database, with the Celery queues and the
channel-layer messages that share it. The test settings use this backend because test workers
(pytest-xdist) share one Redis database and clear the cache between tests (docs/testing.md)."""

from __future__ import annotations

from radiology.process_cache import ProcessRedisCache


class PrefixScopedRedisCache(ProcessRedisCache):
    def clear(self) -> bool:
        # make_key("*") is "<KEY_PREFIX>:<version>:*"; every version of this prefix is ours
        pattern = f"{self.key_prefix}:*"
        client = self._cache.get_client(None, write=True)
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
        return True
