"""Both topologies come from the environment alone; production refuses generated secrets.

Each case runs Django in a fresh interpreter, as a real deployment would start."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import json, sys, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({'db': settings.DATABASES['default']['ENGINE'], "
    "'layer': settings.CHANNEL_LAYERS['default']['BACKEND'], 'eager': settings.CELERY_TASK_ALWAYS_EAGER, "
    "'broker': settings.CELERY_BROKER_URL, 'embedded': settings.EMBEDDED, 'secret': settings.SECRET_KEY, "
    "'storage_key': settings.READROOM_STORAGE_KEY, 'idle': settings.SESSION_COOKIE_AGE, "
    "'heavy': [m for m in ('pydicom', 'numpy', 'fhir.resources', 'requests') if m in sys.modules]}))"
)
REAL_STORAGE_KEY = base64.b64encode(b"k" * 32).decode()
REAL_SECRET = "s" * 50


def _start(settings_module: str, env: dict[str, str], data_dir: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}}
    clean.update(DJANGO_SETTINGS_MODULE=settings_module, READROOM_DATA_DIR=str(data_dir), **env)
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_environment_gives_the_embedded_topology(tmp_path):
    result = _start("radiology.settings.base", {}, tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["db"] == "django.db.backends.sqlite3"
    assert seen["layer"] == "channels.layers.InMemoryChannelLayer"
    assert seen["eager"] is True
    assert seen["embedded"] is True
    assert seen["idle"] == 15 * 60
    # secrets are generated once, kept private in the data directory, and reused
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(seen["storage_key"])) == 32
    again = json.loads(_start("radiology.settings.base", {}, tmp_path).stdout)
    assert again["secret"] == seen["secret"] and again["storage_key"] == seen["storage_key"]


def test_database_and_redis_urls_give_the_production_topology(tmp_path):
    env = {
        "DATABASE_URL": "postgres://u@127.0.0.1:5432/readroom",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    seen = json.loads(_start("radiology.settings.base", env, tmp_path).stdout)
    assert seen["db"] == "django.db.backends.postgresql"
    assert seen["layer"] == "channels_redis.core.RedisChannelLayer"
    assert seen["eager"] is False
    assert seen["broker"] == "redis://127.0.0.1:6379/0"
    assert seen["embedded"] is False
    # and setting up imports none of the heavy libraries: each process that uses one imports it then
    # (pydicom, numpy and fhir.resources were ~1 s of CPU per start: every manage.py, listener, probe)
    assert seen["heavy"] == []


def test_idle_timeout_is_configurable(tmp_path):
    seen = json.loads(
        _start("radiology.settings.base", {"READROOM_IDLE_TIMEOUT_MINUTES": "5"}, tmp_path).stdout
    )
    assert seen["idle"] == 300


PRODUCTION_ENV = {
    "DATABASE_URL": "postgres://u@127.0.0.1:5432/readroom",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "SECRET_KEY": REAL_SECRET,
    "READROOM_STORAGE_KEY": REAL_STORAGE_KEY,
}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": "django-insecure-abc"}, "SECRET_KEY must be a real secret"),
        ({"READROOM_STORAGE_KEY": ""}, "READROOM_STORAGE_KEY must be set"),
        ({"READROOM_STORAGE_KEY": base64.b64encode(b"short").decode()}, "32 bytes"),
        ({"READROOM_STORAGE_KEY": "not base64!"}, "must be base64"),
    ],
)
def test_production_refuses_to_start_without_real_secrets(tmp_path, override, message):
    result = _start("radiology.settings.production", {**PRODUCTION_ENV, **override}, tmp_path)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr
    # and it never fell back to generating one
    assert not (tmp_path / "secret_key").exists()
    assert not (tmp_path / "storage_key").exists()


def test_production_starts_with_real_secrets(tmp_path):
    result = _start("radiology.settings.production", PRODUCTION_ENV, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["secret"] == REAL_SECRET


LAYER_PROBE = (
    "import json, django; django.setup(); from channels.layers import get_channel_layer; "
    "from channels_redis.utils import create_pool; layer = get_channel_layer(); "
    "connection = create_pool(layer.hosts[0]).make_connection(); "
    "print(json.dumps({'read': connection.socket_timeout, 'wait': layer.brpop_timeout}))"
)


def test_channel_layer_reads_outlast_its_blocking_receive(tmp_path):
    # given the production topology (no Redis server is needed to build a connection)
    env = {"DATABASE_URL": "postgres://u@127.0.0.1:5432/readroom", "REDIS_URL": "redis://127.0.0.1:6379/0"}
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}}
    clean.update(DJANGO_SETTINGS_MODULE="radiology.settings.base", READROOM_DATA_DIR=str(tmp_path), **env)
    # when the channel layer's Redis connection is built as a consumer builds it (not yet connected)
    result = subprocess.run(
        [sys.executable, "-c", LAYER_PROBE], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )
    # then a read waits longer than the layer's BZPOPMIN blocks: an idle websocket is not torn down by
    # a client-side read timeout (redis-py 8 defaults to 5 s, the same as channels-redis's wait)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["read"] is None or seen["read"] > seen["wait"], seen


POOL_PROBE = """
import json, os
import radiology.asgi  # the web process: sets up Django with its connection pool
from django.core.signals import request_finished
from django.db import connection
pids = []
for _ in range(20):  # requests one after another, each ending as Django ends one
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pids.append(cursor.fetchone()[0])
    request_finished.send(sender=None)
pool = connection.pool
stats = pool.get_stats()
print(json.dumps({"pids": pids, "opened": stats["connections_num"], "max": pool.max_size,
                  "age": connection.settings_dict["CONN_MAX_AGE"]}))
"""


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="the pool is PostgreSQL's"
)
def test_the_web_process_reuses_pooled_connections_across_requests(tmp_path, db, settings):
    # given the web process's settings, on this PostgreSQL server and the test database
    base = settings.DATABASES["default"]
    env = {
        "DATABASE_URL": f"postgres://{base['USER']}@{base['HOST']}:{base['PORT']}/{base['NAME']}",
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    }
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}}
    clean.pop("READROOM_DB_POOL_MAX_SIZE", None)
    clean.update(DJANGO_SETTINGS_MODULE="radiology.settings.base", READROOM_DATA_DIR=str(tmp_path), **env)
    # when twenty requests end one after the other
    result = subprocess.run(
        [sys.executable, "-c", POOL_PROBE], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )
    # then they took server connections back from the pool instead of opening one each (a new
    # connection per request cost more than the worklist's SQL: bench/worklist); the pool keeps
    # two and may open another while a returned one is being reset
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert len(seen["pids"]) == 20
    assert len(set(seen["pids"])) <= 4 and seen["opened"] <= 4, seen
    assert seen["max"] == 16 and seen["age"] == 0
