"""bench/ingest — a generated 300-slice 512×512 CT sent by dcmtk's storescu (TCP_NODELAY=1, one
association) to `manage.py dicom_scp` (production topology: PostgreSQL index, encrypted storage
with fsync). Each C-STORE response comes after the instance is stored *and* indexed, so storescu's
wall time is the time until every instance is stored and indexed. When Orthanc is installed
(`apt-get install orthanc`) the same series goes to Orthanc in the same run, for the ratio.

    .venv/bin/python bench/ingest/run.py [--slices 300]      (or: make bench-ingest)

Target (issue 3): our rate / Orthanc's >= 1.0 (Orthanc 1.10 ~140 instances/s on 2 cores)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    PYTHON,
    ROOT,
    SETUP_FACILITY,
    bench_database,
    bench_env,
    cpu_seconds,
    database_fresh,
    free_port,
    manage,
    row_count,
    shell,
    wait_for_port,
)


def series_write(directory: Path, slices: int) -> list[Path]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings.base")
    from interfaces.simulator import Procedure, exam_random, series_datasets

    exam = exam_random(random.Random(300), "BENCH", stroke_rate=0.0)
    exam = dataclasses.replace(
        exam, procedure=Procedure("70450", "CT HEAD W/O CONTRAST", "CT", "HEAD", slices)
    )
    paths = []
    for ds in series_datasets(exam, slices=slices, size=512):
        path = directory / f"{ds.InstanceNumber:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def storescu(port: int, called: str, calling: str, files: list[Path]) -> float:
    env = {**os.environ, "TCP_NODELAY": "1"}
    started = time.perf_counter()
    subprocess.run(
        ["storescu", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def readroom_rate(files: list[Path]) -> tuple[float, int, float]:
    database = bench_database("ingest")
    env = bench_env(database, READROOM_STORAGE_DIR=tempfile.mkdtemp(prefix="rr-bench-store-"))
    database_fresh(database)
    manage(env, "migrate", "-v0")
    shell(env, SETUP_FACILITY)
    port = free_port()
    scp = subprocess.Popen(
        [PYTHON, "manage.py", "dicom_scp", "--port", str(port)], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        storescu(port, "READROOM", "BENCH_CT", files[:5])  # warm-up association (indexes, caches)
        cpu = cpu_seconds(scp.pid)
        elapsed = storescu(port, "READROOM", "BENCH_CT", files)
        cpu = cpu_seconds(scp.pid) - cpu
    finally:
        scp.terminate()
        scp.wait(10)
        shutil.rmtree(env["READROOM_STORAGE_DIR"], ignore_errors=True)
    indexed = row_count(env, "imaging.models", "Instance")
    return len(files) / elapsed, indexed, cpu / len(files)


def orthanc_rate(files: list[Path]) -> float | None:
    binary = shutil.which("Orthanc")
    if binary is None:
        return None
    work = Path(tempfile.mkdtemp(prefix="orthanc-bench-"))
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [],
        "DicomAlwaysAllowStore": True,
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen(
        [binary, str(work / "orthanc.json")],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(dicom_port)
        storescu(dicom_port, "ORTHANC", "BENCH_CT", files[:5])
        return len(files) / storescu(dicom_port, "ORTHANC", "BENCH_CT", files)
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings.base")
    django.setup()
    with tempfile.TemporaryDirectory(prefix="rr-bench-series-") as tmp:
        files = series_write(Path(tmp), args.slices)
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        ours, indexed, cpu = readroom_rate(files)
        orthanc = orthanc_rate(files)
    print(
        f"bench/ingest: {args.slices}-slice 512x512 CT ({size_mb:.0f} MB) by storescu, TCP_NODELAY=1, one association"
    )
    print(
        f"  ReadRoom  {ours:7.1f} instances/s  stored (AES-256-GCM, fsync) and indexed on PostgreSQL; {indexed} rows"
    )
    print(f"            {cpu * 1000:7.2f} ms SCP CPU per instance (all threads; load-independent)")
    if orthanc is None:
        print("  Orthanc   not installed (apt-get install orthanc) — no comparison")
    else:
        print(
            f"  Orthanc   {orthanc:7.1f} instances/s  (1.10, SQLite index, default storage: fsync per file)"
        )
        print(f"  ratio     {ours / orthanc:7.2f}  (target >= 1.0)")


if __name__ == "__main__":
    main()
