"""What keeps xdist workers apart (docs/testing.md): each worker's own data directory, channel-layer and
cache prefixes, a cache ``clear()`` that leaves the other workers' Redis keys alone, and the benches'
Redis database apart from the one the workers share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.test_benchmarks import bench_redis_url

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import _pytest, json, os, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({'data': str(settings.DATA_DIR), 'layer': settings.CHANNEL_LAYERS['default']"
    "['CONFIG'].get('prefix'), 'cache': settings.CACHES['default'].get('KEY_PREFIX'), "
    "'env_layer': os.environ.get('READROOM_CHANNEL_PREFIX')}))"
)


def _worker_settings(worker: str, data_dir: Path) -> dict:
    """The test settings as an xdist worker process loads them (_pytest imported, as in pytest)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "READROOM_CHANNEL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="radiology.settings.test",
        READROOM_DATA_DIR=str(data_dir),
        REDIS_URL="redis://127.0.0.1:6379/0",  # not contacted: only the settings are read
        PYTEST_XDIST_WORKER=worker,
    )
    env.pop("READROOM_CACHE_KEY_PREFIX", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_each_worker_has_its_own_data_directory_and_redis_prefixes(tmp_path):
    gw0, gw1 = _worker_settings("gw0", tmp_path), _worker_settings("gw1", tmp_path)
    assert gw0["data"] == str(tmp_path / "gw0") and gw1["data"] == str(tmp_path / "gw1")
    assert (tmp_path / "gw0" / "secret_key").exists() and (tmp_path / "gw1" / "secret_key").exists()
    assert gw0["layer"] == "readroom-test-gw0" != gw1["layer"]
    assert gw0["cache"] == "readroom-test-gw0" != gw1["cache"]
    # and the processes a test starts inherit the worker's prefix through the environment
    assert gw0["env_layer"] == "readroom-test-gw0"


@pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis cache")
def test_clearing_the_cache_removes_only_its_own_keys():
    from django.core.cache import cache

    client = redis.Redis.from_url(settings.REDIS_URL)
    neighbour = f"readroom-test-neighbour-{uuid.uuid4().hex[:8]}"  # another worker's queue, say
    try:
        client.rpush(neighbour, "a task")
        cache.set("mine", 1)
        cache.set("mine-too", 2, version=3)
        cache.clear()
        assert cache.get("mine") is None and cache.get("mine-too", version=3) is None
        assert client.lrange(neighbour, 0, -1) == [b"a task"]
    finally:
        client.delete(neighbour)
        client.close()


def test_the_benches_flush_a_redis_database_of_their_own(monkeypatch):
    monkeypatch.delenv("READROOM_TEST_BENCH_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/1")
    assert bench_redis_url() == "redis://127.0.0.1:6379/9"
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/10")
    assert bench_redis_url() == "redis://127.0.0.1:6379/2"
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379")
    assert bench_redis_url() == "redis://127.0.0.1:6379/8"
    monkeypatch.setenv("READROOM_TEST_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    assert bench_redis_url() == "redis://127.0.0.1:6379/14"
