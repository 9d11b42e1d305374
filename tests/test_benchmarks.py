"""Benchmarks that cannot rot (issue 16): every bench in bench/ runs at its ``--smoke`` size — the
real processes, PostgreSQL and Redis, a few seconds each — and must finish and print its figures
and the machine's load. The figures themselves are not asserted (a smoke size measures nothing).

PostgreSQL only (the benches are PostgreSQL programs). Their databases are
``<the test database's name>_smoke_*``, copies of one migrated template. Each bench flushes its Redis
database, so they get one of their own, never the one the other tests (and xdist workers) share:
``READROOM_TEST_BENCH_REDIS_URL``, else the run's database number + 8 (of Redis's 16). Under xdist
(``--dist loadscope``: a module is one unit) one worker runs them one after another, as they share
the template and that Redis database."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get("DATABASE_URL", "")

pytestmark = [
    pytest.mark.skipif(
        not DATABASE_URL.startswith("postgres") or not os.environ.get("REDIS_URL"),
        reason="the benchmarks need PostgreSQL and Redis (DATABASE_URL, REDIS_URL)",
    ),
]

# bench → (command-line arguments beside --smoke, a line its report must contain). A bench is
# bench/<name>/run.py; a name with a slash is that script itself (bench/ingest/associations.py).
BENCHES = {
    "hl7": ([], "last ACK → all applied"),
    "ingest": (["--storage", "s3", "--associations", "2", "--processes", "2"], "ratio s3/filesystem"),
    "worklist": (["--http", "--server-timing"], "event → row applied"),
    "stroke_alert": ([], "stroke ORM ACK → alert"),
    "ai": ([], "SR C-STORE response → re-ranked"),
    "delivery": ([], "signed → ACK recorded"),
    "priors": ([], "ratio ReadRoom C-MOVE/movescu→storescp"),
    "viewer": ([], "ratio ReadRoom/Orthanc, whole series"),
    "ingest/associations": ([], "PG sessions opened"),
    "hl7/apply_profile": ([], "statements per message"),
}


def bench_script(bench: str) -> str:
    return f"bench/{bench}.py" if "/" in bench else f"bench/{bench}/run.py"


def bench_redis_url() -> str:
    """The benches' own Redis database: they FLUSHDB it (bench/*/run.py)."""
    explicit = os.environ.get("READROOM_TEST_BENCH_REDIS_URL")
    if explicit:
        return explicit
    server, _, number = os.environ["REDIS_URL"].rstrip("/").rpartition("/")
    if not number.isdigit():  # redis://host:port without a database number is database 0
        server, number = os.environ["REDIS_URL"].rstrip("/"), "0"
    return f"{server}/{(int(number) + 8) % 16}"


def _psql(sql: str) -> None:
    result = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], capture_output=True, text=True
    )
    assert result.returncode == 0, f"{sql}: {result.stderr}"  # PostgreSQL's reason, shown on failure


def _smoke_databases(prefix: str) -> list[str]:
    """Every database a smoke run made (bench_database(<kind>) = <prefix>_<kind>, whatever the kind)."""
    query = f"SELECT datname FROM pg_database WHERE starts_with(datname, '{prefix}_')"  # noqa: S608 (the test's own prefix)
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAtc", query]
    result = subprocess.run(psql, capture_output=True, text=True, check=True)
    return result.stdout.split()


def _migrated_template(prefix: str, env: dict[str, str]) -> str:
    """The benches' migrated template: under xdist on PostgreSQL the run's own (tests/xdist_db.py,
    migrated once for every worker's test database; no bench connects to it, each copies it), else
    ``<prefix>_template``, migrated here (~30 s of CPU on the 2-core machine, a third of this file's)."""
    from django.db import connection

    run_template = connection.settings_dict["TEST"].get("TEMPLATE")  # django_db_modify_db_settings'
    if os.environ.get("PYTEST_XDIST_WORKER") and run_template:
        return run_template
    template = f"{prefix}_template"
    _psql(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
    _psql(f"CREATE DATABASE {template}")
    migrate_env = {**env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{template}"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=migrate_env, check=True)
    return template


@pytest.fixture(scope="session")
def bench_env(django_db_modify_db_settings):
    """The environment every smoke run shares: its database prefix and a migrated template."""
    prefix = f"{urlparse(DATABASE_URL).path.lstrip('/')}_smoke"  # never a real bench run's
    env = {
        **os.environ,
        "READROOM_BENCH_DB_PREFIX": prefix,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "radiology.settings.base",
        "REDIS_URL": bench_redis_url(),
    }
    env.pop("DATABASE_URL", None)  # each bench names its own
    env["READROOM_BENCH_TEMPLATE"] = _migrated_template(prefix, env)
    yield env
    for name in _smoke_databases(prefix):
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _bench_run(command: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """The bench in a process group of its own, and the whole group ended afterwards: a bench that
    fails or times out must not leave its listener or Celery worker running into the next bench."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        stderr += f"\n(timed out after {timeout} s)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize("bench", list(BENCHES))
def test_the_bench_runs_at_its_smoke_size(bench, bench_env, record_property):
    if bench == "ingest" and shutil.which("storescu") is None:
        pytest.skip("dcmtk not installed (apt-get install dcmtk)")
    if bench in ("priors", "viewer") and not (shutil.which("Orthanc") or os.path.exists("/usr/sbin/Orthanc")):
        pytest.skip("Orthanc (the PACS, the peer) not installed (apt-get install orthanc orthanc-dicomweb)")
    arguments, expected = BENCHES[bench]
    started = time.monotonic()
    result = _bench_run([sys.executable, bench_script(bench), "--smoke", *arguments], bench_env)
    record_property("seconds", round(time.monotonic() - started, 1))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert expected in result.stdout, result.stdout[-3000:]
    assert "load average" in result.stdout
    if bench == "stroke_alert" and shutil.which("chromium"):
        # issue 14: the alert timed on the report editor and the ops page in a real browser too
        assert "banner on the report editor" in result.stdout, result.stdout[-3000:]
        assert "banner on the ops page" in result.stdout, result.stdout[-3000:]
