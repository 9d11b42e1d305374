"""Settings for the test suite: the base settings with a fast password hasher.

The topology still follows the environment: no variables → SQLite + in-memory layer; ``.ci/run``
sets DATABASE_URL and REDIS_URL so CI runs on PostgreSQL and Redis."""

import os
import tempfile
from pathlib import Path

from radiology.settings.base import *  # noqa: F403

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
# Keep test runs' channel messages apart from a running system's.
if REDIS_URL:  # noqa: F405
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = "readroom-test"  # noqa: F405
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
    # A session left idle inside a transaction blocks the next test's flush, and the whole run hangs
    # until CI's time limit (seen from a listener thread outliving its test): PostgreSQL ends such a
    # session after a minute, so the run fails with an error that names it instead.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (  # noqa: F405
        "-c idle_in_transaction_session_timeout=60000"
    )
