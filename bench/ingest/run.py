"""bench/ingest — a generated 300-slice 512×512 CT sent by dcmtk's storescu (TCP_NODELAY=1, one
association) to `manage.py dicom_scp` (production topology: PostgreSQL index, encrypted storage
with fsync). Each C-STORE response comes after the instance is stored *and* indexed, so storescu's
wall time is the time until every instance is stored and indexed. When Orthanc is installed
(`apt-get install orthanc`) the same series goes to Orthanc in the same run, for the ratio.

    .venv/bin/python bench/ingest/run.py [--slices 300] [--associations 1] [--processes 1]
        [--storage s3] [--rounds 2] [--smoke]
    (or: make bench-ingest)

``--associations K`` sends K such series at once (K storescu processes, one study each), to
ReadRoom and to Orthanc alike; the rate is all instances over the wall time until the last
association ends. ``--processes P`` runs `dicom_scp --processes P` (P children on one port); the
SCP CPU is the parent's and the children's together.

``--storage s3`` runs the same series into an S3-API bucket (moto in server mode on a free port, as
tests/s3.py starts it) as well, interleaved with the file-system run and Orthanc (A B C A B C), and
prints the ratio s3/filesystem of the same rounds.

Target (issue 3): our rate / Orthanc's >= 1.0 (Orthanc 1.10 ~140 instances/s on 2 cores); issue 16:
>= 1.0 with --associations 4 --processes 2 too."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
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
    orthanc_running,
    process_tree_cpu_seconds,
    row_count,
    shell,
    uptime_print,
    wait_for_port,
)


def series_write(directory: Path, slices: int, seed: int = 300) -> list[Path]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings.base")
    from interfaces.simulator import Procedure, exam_random, series_datasets

    exam = exam_random(random.Random(seed), "BENCH", stroke_rate=0.0)
    exam = dataclasses.replace(
        exam, procedure=Procedure("70450", "CT HEAD W/O CONTRAST", "CT", "HEAD", slices)
    )
    directory.mkdir(exist_ok=True)
    paths = []
    for ds in series_datasets(exam, slices=slices, size=512):
        path = directory / f"{ds.InstanceNumber:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def storescu(port: int, called: str, calling: str, series: list[list[Path]]) -> float:
    """Each series on an association of its own, all at once; the wall time until the last ends."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            ["storescu", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for files in series
    ]
    failed = [(sender.wait(), sender.stderr.read()) for sender in senders]
    elapsed = time.perf_counter() - started
    failed = [(code, err[-500:]) for code, err in failed if code != 0]
    assert not failed, f"storescu failed: {failed}"
    return elapsed


def readroom_rate(
    series: list[list[Path]], template: str, store: dict[str, str] | None, processes: int
) -> dict:
    """One run of the SCP on a fresh copy of the migrated database: the file system (``store``
    None) or an S3-API bucket (``store``: the environment naming it)."""
    database = bench_database("ingest")
    directory = tempfile.mkdtemp(prefix="rr-bench-store-")
    env = bench_env(database, READROOM_STORAGE_DIR=directory, **(store or {}))
    database_copy(template, database)
    port = free_port()
    scp = subprocess.Popen(
        [PYTHON, "manage.py", "dicom_scp", "--port", str(port), "--processes", str(processes)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        # warm-up associations, as many as measured (indexes, caches, each child's first session)
        storescu(port, "READROOM", "BENCH_CT", [files[:5] for files in series])
        cpu = process_tree_cpu_seconds(scp.pid)
        elapsed = storescu(port, "READROOM", "BENCH_CT", series)
        cpu = process_tree_cpu_seconds(scp.pid) - cpu
    finally:
        scp.terminate()
        scp.wait(30)
        shutil.rmtree(directory, ignore_errors=True)
    instances = sum(len(files) for files in series)
    indexed = row_count(env, "imaging_instance")
    assert indexed == instances, f"{indexed} of {instances} instances indexed"
    return {"instances/s": instances / elapsed, "SCP CPU ms/instance": cpu / instances * 1000}


def orthanc_rate(series: list[list[Path]]) -> dict:
    """Orthanc's C-STORE rate for the same files (bench.common.orthanc_running: its SQLite index,
    fsync per file), warmed up with the first five of each series, as many associations at once."""
    work = Path(tempfile.mkdtemp(prefix="orthanc-bench-"))
    instances = sum(len(files) for files in series)
    try:
        with orthanc_running(work, Name="bench", DicomAlwaysAllowStore=True) as orthanc:
            port = orthanc["dicom_port"]
            storescu(port, "ORTHANC", "BENCH_CT", [files[:5] for files in series])
            cpu = cpu_seconds(orthanc["process"].pid)
            elapsed = storescu(port, "ORTHANC", "BENCH_CT", series)
            cpu = cpu_seconds(orthanc["process"].pid) - cpu
            # its CPU per instance too: on a loaded machine the steadier figure to compare with the SCP's
            return {"instances/s": instances / elapsed, "Orthanc CPU ms/instance": cpu / instances * 1000}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument(
        "--storage",
        choices=("filesystem", "s3"),
        default="filesystem",
        help="s3: also run against an S3-API store (moto server) and give the ratio",
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (A B A B)")
    parser.add_argument(
        "--associations", type=int, default=1, help="series sent at once, one association each"
    )
    parser.add_argument("--processes", type=int, default=1, help="dicom_scp --processes")
    args = parser.parse_args()
    if args.smoke:
        args.slices, args.rounds = 8, 1
    sys.path.insert(0, str(ROOT))
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings.base")
    django.setup()
    template = bench_database("ingest_template")
    env = bench_env(template)
    database_migrated(template, env)
    shell(env, SETUP_FACILITY)
    moto = None
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="rr-bench-series-") as tmp:
        series = [
            series_write(Path(tmp) / f"series-{n}", args.slices, seed=300 + n)
            for n in range(args.associations)
        ]
        size_mb = sum(p.stat().st_size for files in series for p in files) / 1e6
        runs = {"filesystem": lambda: readroom_rate(series, template, None, args.processes)}
        if args.storage == "s3":
            from tests.s3 import MotoServer

            moto = MotoServer().start()
            stack.callback(moto.stop)
            runs["s3"] = lambda: readroom_rate(series, template, _bucket(moto), args.processes)
        if shutil.which("Orthanc"):
            runs["Orthanc"] = lambda: orthanc_rate(series)
        print(
            f"bench/ingest: {args.associations} × {args.slices}-slice 512x512 CT ({size_mb:.0f} MB) by storescu,"
            f" TCP_NODELAY=1, {args.associations} association(s) at once; dicom_scp --processes"
            f" {args.processes}; {args.rounds} round(s), interleaved: {' '.join(runs)}"
        )
        uptime_print("start")
        results = interleaved(runs, args.rounds)
    mean = {name: statistics.mean(r["instances/s"] for r in rounds) for name, rounds in results.items()}
    for name, rate in mean.items():
        cpu = [value for r in results[name] for key, value in r.items() if key.endswith("CPU ms/instance")]
        extra = f"; CPU {statistics.mean(cpu):.2f} ms/instance (all threads)" if cpu else ""
        what = (
            "Orthanc 1.10, SQLite index, fsync per file" if name == "Orthanc" else f"ReadRoom, {name} store"
        )
        print(f"  {name:<10} {rate:7.1f} instances/s  ({what}{extra})")
    if "Orthanc" in mean:
        for name in ("filesystem", "s3"):
            if name in mean:
                per_round = [
                    a["instances/s"] / b["instances/s"]
                    for a, b in zip(results[name], results["Orthanc"], strict=True)
                ]
                print(f"  ratio {name}/Orthanc   {', '.join(f'{r:.2f}' for r in per_round)}  (target >= 1.0)")
    else:
        print("  Orthanc   not installed (apt-get install orthanc) — no comparison")
    if "s3" in mean:
        per_round = [
            a["instances/s"] / b["instances/s"]
            for a, b in zip(results["s3"], results["filesystem"], strict=True)
        ]
        print(
            f"  ratio s3/filesystem  {', '.join(f'{r:.2f}' for r in per_round)}  (same rounds, interleaved)"
        )
    uptime_print("end")


def _bucket(moto) -> dict[str, str]:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    moto.bucket_create(name)
    return moto.env(name)


if __name__ == "__main__":
    main()
