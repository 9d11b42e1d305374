"""Settings for the test suite: the base settings with a fast password hasher.

The topology still follows the environment: no variables → SQLite + in-memory layer; ``.ci/run``
sets DATABASE_URL and REDIS_URL so CI runs on PostgreSQL and Redis.

Under pytest-xdist (``make test`` runs ``-n``; docs/testing.md) each worker process ``gwN`` gets its
own data directory, channel-layer prefix and cache key prefix, all put in the environment so the
processes a test starts (uvicorn, Celery, manage.py) inherit the same ones; pytest-django gives it its
own test database (``test_<name>_gwN``). The Redis database stays the run's: only keys are apart."""

import os
import sys
import tempfile
from pathlib import Path

# "gwN" in an xdist worker (xdist sets it before this module is imported), "" without xdist — and
# "" in the processes a test starts: they inherit the variable, and the worker's choices below too.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "") if "_pytest" in sys.modules else ""
if XDIST_WORKER:
    # Secrets are generated into the data directory on first use (O_EXCL): workers sharing one would
    # race on them, and a test's files would land among another worker's.
    _data_dir = Path(os.environ.get("READROOM_DATA_DIR") or Path(__file__).resolve().parents[2] / "var")
    os.environ["READROOM_DATA_DIR"] = str(_data_dir / XDIST_WORKER)
    os.environ["READROOM_CHANNEL_PREFIX"] = f"readroom-test-{XDIST_WORKER}"
    os.environ["READROOM_CACHE_KEY_PREFIX"] = f"readroom-test-{XDIST_WORKER}"

from radiology.settings.base import *  # noqa: E402, F403

# Argon2 is deliberately slow; tests create many users. tests/accounts checks the real hasher.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Task tests start a real worker; everything else runs tasks inline.
CELERY_TASK_ALWAYS_EAGER = True
# Outbox retry times are asserted exactly.
READROOM_HL7_OUT_RETRY_JITTER = False
# Keep test runs' channel messages apart from a running system's (and, under xdist, each worker's).
if REDIS_URL:  # noqa: F405
    _prefix = os.environ.get("READROOM_CHANNEL_PREFIX", "")  # a worker's, set above, or its parent's
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = (  # noqa: F405
        _prefix if _prefix.startswith("readroom-test") else "readroom-test"
    )
    # Django's RedisCache.clear() is FLUSHDB: tests clear the cache between them, which would also
    # drop the Celery queues and channel messages of the tests running beside them on other workers.
    CACHES["default"]["BACKEND"] = "radiology.prefix_cache.PrefixScopedRedisCache"  # noqa: F405
# Websocket tests reach the database from asgiref's worker threads; persistent connections there
# would outlive the test and block dropping the test database.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not Django's default in-memory database: the edge servers run in their own threads
    # during tests, and the in-memory shared cache locks whole tables instead of waiting (WAL +
    # busy timeout), which is what the embedded topology really does.
    # One file per test run, so runs side by side (and CI next to a developer) never share it.
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(Path(tempfile.gettempdir()) / f"readroom-test-{os.getpid()}.sqlite3")
    }
else:
    # Flushes DELETE rather than TRUNCATE: minutes of make test (radiology/test_postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "radiology.test_postgresql"  # noqa: F405
    # A session left idle inside a transaction blocks the next test's flush, and the whole run hangs
    # until CI's time limit (seen from a listener thread outliving its test): PostgreSQL ends such a
    # session after a minute, so the run fails with an error that names it instead.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (  # noqa: F405
        "-c idle_in_transaction_session_timeout=60000 -c synchronous_commit=off"
    )
