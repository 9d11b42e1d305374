"""bench/ingest/associations.py — the SCP's cost per association (issue 16): many sequential
associations of one small CT each (a pynetdicom SCU, as a modality that opens an association per
image), to `manage.py dicom_scp` with its PostgreSQL sessions pooled and with `--no-db-pool` (a
session per association), interleaved A B A B. Prints associations/s, SCP CPU per association and
the PostgreSQL sessions the SCP opened (pg_stat_database.sessions).

    .venv/bin/python bench/ingest/associations.py [--associations 100] [--rounds 2] [--smoke]

Uses bench/ingest's migrated template database (run bench/ingest/run.py once first)."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    PYTHON,
    ROOT,
    bench_database,
    bench_env,
    bench_parser,
    cpu_seconds,
    database_copy,
    free_port,
    interleaved,
    uptime_print,
    wait_for_port,
)


def sessions(database: str) -> int:
    sql = f"SELECT sessions FROM pg_stat_database WHERE datname = '{database}'"
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", sql], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def scp_run(datasets: list, *extra: str) -> dict:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    database = bench_database("associations")
    env = bench_env(database, READROOM_STORAGE_DIR=f"/tmp/{database}-store", LOG_LEVEL="WARNING")
    database_copy(bench_database("ingest_template"), database)
    port = free_port()
    scp = subprocess.Popen(
        [PYTHON, "manage.py", "dicom_scp", "--port", str(port), *extra],
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
    print(f"bench/ingest/associations: {args.associations} associations of one 64x64 CT each, in a row")
    uptime_print("start")
    results = interleaved(
        {"pooled": lambda: scp_run(datasets), "per-association": lambda: scp_run(datasets, "--no-db-pool")},
        args.rounds,
    )
    for name, rounds in results.items():
        means = {k: statistics.mean(r[k] for r in rounds) for k in rounds[0] if k != "load"}
        print(f"  {name:<16} " + "  ".join(f"{k} {v:.1f}" for k, v in means.items()))
    uptime_print("end")


if __name__ == "__main__":
    main()
