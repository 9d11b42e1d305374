"""Shared set-up for benchmarks: a dedicated PostgreSQL database, migrated, with one facility whose
HL7 sender and DICOM AE title are registered; processes started the way deploy/ starts them."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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


def database_copy(template: str, name: str) -> None:
    """A fresh database as a copy of a migrated one (seconds, where migrating is a minute)."""
    for sql in (
        f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
        f"CREATE DATABASE {name} TEMPLATE {template}",
    ):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


def database_migrated(name: str, env: dict[str, str]) -> None:
    """``name`` dropped and made anew, migrated: a copy of ``$READROOM_BENCH_TEMPLATE`` (a migrated
    database, e.g. the smoke tests' one) when that is set, else by running the migrations."""
    template = os.environ.get("READROOM_BENCH_TEMPLATE")
    if template:
        database_copy(template, name)
        return
    database_fresh(name)
    manage(env, "migrate", "-v0")


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


def row_count(env: dict, table: str) -> int:
    """Rows in ``table`` of the bench's database, by psql (a Django shell per poll costs seconds)."""
    database = env["DATABASE_URL"].rsplit("/", 1)[1]
    out = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-tAc",
            f"SELECT count(*) FROM {table}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip())


# --- what every bench prints and how it compares -------------------------------------------------


def load_average() -> str:
    """The machine's load (``uptime``'s three figures), printed with every bench's figures: on a
    shared machine a figure means little without the load it was taken under."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_reference_ms() -> float:
    """CPU milliseconds of a fixed piece of pure Python: on a shared machine a process's CPU time
    per request stretches too (other processes on the sibling hyperthread, cache), so CPU figures
    are printed with this yardstick beside them."""
    started = time.process_time()
    sum(i * i for i in range(1_000_000))
    return (time.process_time() - started) * 1000


def uptime_print(when: str = "") -> None:
    print(
        f"  load average {load_average()}{f' ({when})' if when else ''}; CPU yardstick {cpu_reference_ms():.0f} ms",
        flush=True,
    )


def interleaved(runs: dict[str, Callable[[], dict]], rounds: int) -> dict[str, list[dict]]:
    """Run each side once per round, in turn (A B A B …), so a change of the machine's load during
    the bench falls on both sides rather than flattering one. Each run returns its figures."""
    results: dict[str, list[dict]] = {name: [] for name in runs}
    for round_ in range(rounds):
        for name, run in runs.items():
            figures = run()
            figures["load"] = load_average()
            results[name].append(figures)
            print(f"  round {round_ + 1} {name:<10} " + _figures_line(figures), flush=True)
    return results


def _figures_line(figures: dict) -> str:
    return "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """Every bench's command line starts with ``--smoke``: a size that runs in seconds, which a test
    runs in CI (tests/test_benchmarks.py) so a bench cannot rot unnoticed; its figures mean nothing."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds' run that only proves the bench works"
    )
    return parser
