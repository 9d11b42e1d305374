"""Shared set-up for benchmarks: a dedicated PostgreSQL database, migrated, with one facility whose
HL7 sender and DICOM AE title are registered; processes started the way deploy/ starts them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# Several people (or CI jobs) may run benchmarks on one PostgreSQL/Redis: READROOM_BENCH_DB_PREFIX and
# REDIS_URL keep each run's database and broker apart (each bench drops and recreates its database).
DB_PREFIX = os.environ.get("READROOM_BENCH_DB_PREFIX", "readroom_bench")


def bench_database(kind: str) -> str:
    return f"{DB_PREFIX}_{kind}"


def redis_db(env: dict[str, str]) -> str:
    return env["REDIS_URL"].rsplit("/", 1)[1] or "0"


def bench_env(database: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
    env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{database}"
    env["DJANGO_SETTINGS_MODULE"] = "radiology.settings.base"
    env.setdefault("READROOM_DATA_DIR", f"/tmp/readroom-bench-{database}")
    env.update(extra)
    return env


def database_fresh(name: str) -> None:
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


def manage(env: dict, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, **kwargs)


def shell(env: dict, code: str) -> str:
    return manage(env, "shell", "-c", code, capture_output=True, text=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


SETUP_FACILITY = """
from facilities.models import Facility, Hl7Sender, DicomSender
f, _ = Facility.objects.get_or_create(code="BENCH", defaults=dict(name="Bench Hospital", state="IL",
    timezone="America/Chicago", kind="community", study_quiet_seconds=3600))
Hl7Sender.objects.get_or_create(facility=f, sending_application="BENCH_RIS", sending_facility="BENCH")
DicomSender.objects.get_or_create(facility=f, ae_title="BENCH_CT")
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux /proc). On a busy machine the wall
    clock varies from run to run; the CPU a process spends per message or instance does not."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def row_count(env: dict, module: str, model: str) -> int:
    out = shell(env, f"from {module} import {model}; print('ROWS', {model}.objects.count())")
    return int(out.split("ROWS", 1)[1].split()[0])
