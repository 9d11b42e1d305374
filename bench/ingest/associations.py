"""bench/ingest/associations.py — the SCP's cost per association (issue 16): many sequential
associations of one small CT each (a pynetdicom SCU, as a modality that opens an association per
image), to `manage.py dicom_scp` with its PostgreSQL sessions pooled and with `--no-db-pool` (a
session per association), interleaved A B A B. Prints associations/s, SCP CPU per association and
the PostgreSQL sessions the SCP opened (pg_stat_database.sessions).

    .venv/bin/python bench/ingest/associations.py [--associations 100] [--rounds 2] [--smoke]

Makes its own migrated template database (``<prefix>_associations_template``, with the BENCH
facility and its BENCH_CT sender), so it runs on its own; ``--smoke`` (8 associations, one round)
is run by tests/test_benchmarks.py."""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    PYTHON,
    ROOT,
    SETUP_FACILITY,
    bench_database,
    bench_env,
    bench_parser,
    cpu_seconds,
    database_copy,
    database_migrated,
    free_port,
    interleaved,
    shell,
    uptime_print,
    wait_for_port,
)


def sessions(database: str) -> int:
    sql = f"SELECT sessions FROM pg_stat_database WHERE datname = '{database}'"
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", sql], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def template_ready() -> str:
    """The migrated database every run copies (seconds, where migrating is a minute)."""
    template = bench_database("associations_template")
    env = bench_env(template)
    database_migrated(template, env)
    shell(env, SETUP_FACILITY)
    return template


def scp_run(datasets: list, template: str, *extra: str) -> dict:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    database = bench_database("associations")
    store = f"/tmp/{database}-store"
    env = bench_env(database, READROOM_STORAGE_DIR=store, LOG_LEVEL="WARNING")
    database_copy(template, database)
    port = free_port()
    scp = subprocess.Popen(
        # --stop-grace 1: wait_for_port's bare TCP probe is an association pynetdicom keeps until
        # its ACSE timeout, which the default grace (20 s) would wait out at every stop
        [PYTHON, "manage.py", "dicom_scp", "--port", str(port), "--stop-grace", "1", *extra],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    ae = AE(ae_title="BENCH_CT")
    ae.add_requested_context(CTImageStorage)

    def one(ds) -> None:
        assoc = ae.associate("127.0.0.1", port, ae_title="READROOM")
        assert assoc.is_established
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status.Status == 0x0000, status

    try:
        wait_for_port(port)
        for ds in datasets[:3]:  # warm-up
            one(ds)
        opened, cpu, started = sessions(database), cpu_seconds(scp.pid), time.perf_counter()
        for ds in datasets[3:]:
            one(ds)
        wall, cpu, opened = (
            time.perf_counter() - started,
            cpu_seconds(scp.pid) - cpu,
            sessions(database) - opened,
        )
    finally:
        scp.terminate()
        scp.wait(30)
        shutil.rmtree(store, ignore_errors=True)
    n = len(datasets) - 3
    return {
        "associations/s": n / wall,
        "SCP CPU ms/association": cpu / n * 1000,
        "PG sessions opened": opened,
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--associations", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.smoke:
        args.associations, args.rounds = 8, 1
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings.base")
    import django

    django.setup()
    from interfaces.simulator import exam_random, series_datasets

    exam = exam_random(random.Random(7), "BENCH", stroke_rate=0.0)
    datasets = list(series_datasets(exam, slices=args.associations + 3, size=64))
    template = template_ready()
    print(f"bench/ingest/associations: {args.associations} associations of one 64x64 CT each, in a row")
    uptime_print("start")
    results = interleaved(
        {
            "pooled": lambda: scp_run(datasets, template),
            "per-association": lambda: scp_run(datasets, template, "--no-db-pool"),
        },
        args.rounds,
    )
    for name, rounds in results.items():
        means = {k: statistics.mean(r[k] for r in rounds) for k in rounds[0] if k != "load"}
        print(f"  {name:<16} " + "  ".join(f"{k} {v:.1f}" for k, v in means.items()))
    uptime_print("end")


if __name__ == "__main__":
    main()
