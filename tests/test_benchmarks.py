"""Benchmarks that cannot rot (issue 16): every bench in bench/ runs at its ``--smoke`` size — the
real processes, PostgreSQL and Redis, a few seconds each — and must finish and print its figures
and the machine's load. The figures themselves are not asserted (a smoke size measures nothing).

PostgreSQL only (the benches are PostgreSQL programs). Their databases are
``<the test database's name>_smoke_*``, copies of one migrated template; they flush the test run's
Redis database, between tests only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get("DATABASE_URL", "")

pytestmark = pytest.mark.skipif(
    not DATABASE_URL.startswith("postgres") or not os.environ.get("REDIS_URL"),
    reason="the benchmarks need PostgreSQL and Redis (DATABASE_URL, REDIS_URL)",
)

# bench → (command-line arguments beside --smoke, a line its report must contain)
BENCHES = {
    "hl7": ([], "bench/hl7:"),
    "ingest": (["--storage", "s3"], "ratio s3/filesystem"),
    "worklist": (["--http"], "event → row applied"),
    "stroke_alert": ([], "stroke ORM ACK → alert"),
    "delivery": ([], "signed → ACK recorded"),
}


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True, capture_output=True)


@pytest.fixture(scope="session")
def bench_env():
    """The environment every smoke run shares: its database prefix and a migrated template."""
    prefix = f"{urlparse(DATABASE_URL).path.lstrip('/')}_smoke"  # never a real bench run's
    template = f"{prefix}_template"
    env = {
        **os.environ,
        "READROOM_BENCH_DB_PREFIX": prefix,
        "READROOM_BENCH_TEMPLATE": template,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "radiology.settings.base",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{template}",
    }
    _psql(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
    _psql(f"CREATE DATABASE {template}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    del env["DATABASE_URL"]  # each bench names its own
    yield env
    for name in [template, *(f"{prefix}_{kind}" for kind in (*BENCHES, "ingest_template"))]:
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.parametrize("bench", list(BENCHES))
def test_the_bench_runs_at_its_smoke_size(bench, bench_env, record_property):
    if bench == "ingest" and shutil.which("storescu") is None:
        pytest.skip("dcmtk not installed (apt-get install dcmtk)")
    arguments, expected = BENCHES[bench]
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, f"bench/{bench}/run.py", "--smoke", *arguments],
        cwd=ROOT,
        env=bench_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    record_property("seconds", round(time.monotonic() - started, 1))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert expected in result.stdout, result.stdout[-3000:]
    assert "load average" in result.stdout
