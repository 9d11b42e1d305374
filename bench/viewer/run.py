"""bench/viewer — a CT series loaded the way OHIF loads it, from ReadRoom's DICOMweb and from Orthanc's (issue 12).

One head CT of ``--slices`` × 512² (the simulator's head phantom, 16-bit, Explicit VR Little Endian)
is stored in ReadRoom through its receive path (encrypted, indexed) into a study routed to and
claimed by a reader (``bench.common.head_ct_claimed``), and the same files into an Orthanc with its
DICOMweb plugin (Debian's ``orthanc-dicomweb``). ReadRoom runs as deployed: uvicorn ``--workers 2``
with the production settings on PostgreSQL + Redis; the reader's requests carry a TOTP-verified
session cookie, as OHIF's do (same origin).

One load, as OHIF v3 with ReadRoom's generated config (``imaging/ohif.py``) makes it: the study's
metadata (``GET …/studies/{uid}/metadata``, ``Accept: application/dicom+json``), then every frame,
in instance order, ``GET …/instances/{sop}/frames/1`` with OHIF's ``Accept: multipart/related;
type=application/octet-stream; transfer-syntax=*`` over ``--concurrency`` keep-alive connections
(a browser's six per origin over HTTP/1.1). Each answer is read whole and checked to hold the
frame's bytes. Figures per load: metadata seconds, the first frame (the first image of the series:
what the reader sees first) from the start of the load and from its own request, the last frame
from the start (the whole series). ReadRoom and Orthanc run interleaved (A B A B), after one
warm-up load each. Targets: first frame < 300 ms from the start of the load; the whole series
≤ 1.0 × Orthanc's time (medians).

ReadRoom is measured twice in the same run: as deployed (OHIF's frames on the fast path,
``interfaces/dicom/web_fast.py``) and, on a second uvicorn, with ``READROOM_DICOMWEB_FAST_FRAMES`` off
(every frame through Django's view); ``--full-path`` runs only the latter, as "ReadRoom".

    PYTHONPATH=$PWD .venv/bin/python bench/viewer/run.py [--slices 300] [--rounds 3] [--concurrency 6] [--full-path] [--smoke]
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    SETUP_FACILITY,
    bench_database,
    bench_env,
    bench_parser,
    database_migrated,
    deployed_processes,
    django_start,
    free_port,
    head_ct_claimed,
    interleaved,
    orthanc_running,
    orthanc_store,
    process_tree_cpu_seconds,
    reader_create,
    redis_db,
    session_cookie,
    shell,
    uptime_print,
)

DATABASE = bench_database("viewer")
BENCH_SECRET = "bench-only-secret-" + "v" * 40
BENCH_STORAGE_KEY = "YmVuY2gtb25seS1zdG9yYWdlLWtleS0zMi1ieXRlcyE="
# What OHIF's dicomweb data source sends for a frame with requestTransferSyntaxUID "*" and
# omitQuotationForMultipartRequest (imaging/ohif.py)
FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
METADATA_ACCEPT = "application/dicom+json"
TAG = "VIEWER1"
FULL = "ReadRoom Django path"  # READROOM_DICOMWEB_FAST_FRAMES off: every frame through the view


def series_part10(study_uid: str, *, slices: int, size: int) -> list[bytes]:
    """The head CT as Part 10 files, patient and accession those of ``head_ct_claimed``'s order."""
    from interfaces.simulator import exam_random, series_datasets

    exam = exam_random(random.Random(12), "BENCH", stroke_rate=0.0)
    exam = dataclasses.replace(exam, mrn=TAG, accession=TAG, study_uid=study_uid)
    files = []
    for ds in series_datasets(exam, slices=slices, size=size):
        ds.IssuerOfPatientID = "BENCH"
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append(buffer.getvalue())
    return files


def readroom_load_study(files: list[bytes]) -> None:
    """Into ReadRoom as the SCP or STOW stores them: checked, encrypted, indexed (in this process)."""
    from facilities.models import Facility
    from imaging.services import IndexCache
    from interfaces.dicom.receive import dicom_instance_receive

    facility = Facility.objects.get(code="BENCH")
    cache = IndexCache()
    for part10 in files:
        result = dicom_instance_receive(facility=facility, part10=part10, cache=cache)
        assert result.ok, f"ReadRoom refused a slice: {result.status:#06x} {result.reason}"


@dataclasses.dataclass(frozen=True)
class Side:
    """One DICOMweb server as a client sees it: root URL and the headers every request carries."""

    root: str  # e.g. http://127.0.0.1:8000/dicomweb
    headers: dict[str, str]
    pid: int  # the server's process (uvicorn's supervisor, its workers its children; Orthanc)


class _Connection:
    """A keep-alive HTTP/1.1 connection to one server (a browser's per-origin socket)."""

    def __init__(self, root: str) -> None:
        parts = urlsplit(root)
        self.prefix = parts.path.rstrip("/")
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        self.connection.request("GET", self.prefix + path, headers=headers)
        response = self.connection.getresponse()
        body = response.read()
        return response.status, response.getheader("Content-Type", ""), body

    def close(self) -> None:
        self.connection.close()


def _frames_of(metadata: list[dict]) -> list[tuple[str, str, int]]:
    """(series, SOP instance, bytes of its frame) per image, in the order OHIF stacks them
    (instance number): the first one is the image the viewport shows first."""
    items = []
    for item in metadata:
        rows, columns = item["00280010"]["Value"][0], item["00280011"]["Value"][0]
        bits = item["00280100"]["Value"][0]
        number = item.get("00200013", {}).get("Value", [0])[0]
        items.append(
            (
                int(number),
                item["0020000E"]["Value"][0],
                item["00080018"]["Value"][0],
                rows * columns * bits // 8,
            )
        )
    return [(series, sop, size) for _, series, sop, size in sorted(items)]


def ohif_load(side: Side, study_uid: str, concurrency: int) -> dict:
    """One study opened as OHIF opens it; the figures of that load (seconds from its start), and
    the CPU per frame the server (all its processes) and this client spent on it: on a shared
    2-core machine the wall clock swings, the CPU per frame much less, and the client's share says
    whether it, not the server, is the limit."""
    server_cpu, client_cpu = process_tree_cpu_seconds(side.pid), time.process_time()
    started = time.perf_counter()
    first = _Connection(side.root)
    status, _, body = first.get(f"/studies/{study_uid}/metadata", {**side.headers, "Accept": METADATA_ACCEPT})
    assert status == 200, f"metadata: HTTP {status} {body[:300]!r}"
    frames = _frames_of(json.loads(body))
    metadata_done = time.perf_counter()
    pending = list(enumerate(frames))
    pending.reverse()  # popped from the end: instance order
    arrived: dict[int, float] = {}
    first_request: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def fetch(connection: _Connection) -> None:
        headers = {**side.headers, "Accept": FRAME_ACCEPT}
        try:
            while True:
                with lock:
                    if not pending or errors:
                        return
                    index, (series, sop, size) = pending.pop()
                    if index == 0:
                        first_request.append(time.perf_counter())
                path = f"/studies/{study_uid}/series/{series}/instances/{sop}/frames/1"
                status, content_type, body = connection.get(path, headers)
                done = time.perf_counter()
                if status != 200 or not content_type.startswith("multipart/related") or len(body) < size:
                    with lock:
                        errors.append(f"{path}: HTTP {status} {content_type} {len(body)} bytes")
                    return
                arrived[index] = done
        except Exception as exc:  # reported below: the load failed
            with lock:
                errors.append(f"{side.root}: {exc!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=fetch, args=(first,))]
    threads += [
        threading.Thread(target=fetch, args=(_Connection(side.root),)) for _ in range(concurrency - 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert len(arrived) == len(frames), f"{len(arrived)} of {len(frames)} frames"
    last = max(arrived.values())
    client_cpu = time.process_time() - client_cpu
    server_cpu = process_tree_cpu_seconds(side.pid) - server_cpu
    return {
        "metadata s": metadata_done - started,
        "first frame ms": (arrived[0] - started) * 1000,
        "its request ms": (arrived[0] - first_request[0]) * 1000,
        "last frame s": last - started,
        "frames/s": len(frames) / (last - metadata_done),
        "server CPU ms/frame": server_cpu * 1000 / len(frames),
        "client CPU ms/frame": client_cpu * 1000 / len(frames),
    }


def _web_command(port: int) -> list[str]:
    return [
        "-m",
        "uvicorn",
        "radiology.asgi:application",
        "--port",
        str(port),
        "--workers",
        "2",
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def _medians(results: list[dict]) -> dict[str, float]:
    keys = [k for k in results[0] if k != "load"]
    return {k: statistics.median(r[k] for r in results) for k in keys}


def _report(results: dict[str, list[dict]], *, slices: int, size: int, concurrency: int) -> None:
    medians = {name: _medians(rounds) for name, rounds in results.items()}
    names = list(medians)
    print(
        f"bench/viewer: {slices}-slice {size}×{size} CT, study metadata then every frame, {concurrency} "
        f"concurrent requests, {len(results['ReadRoom'])} rounds interleaved (uvicorn --workers 2, "
        "production settings, reader's session; Orthanc + DICOMweb plugin)"
    )
    print(f"  {'median':<24}" + "".join(f" {name:>20}" for name in names))
    for key, label in (
        ("metadata s", "metadata (s)"),
        ("first frame ms", "first frame (ms)"),
        ("its request ms", "  its own request (ms)"),
        ("last frame s", "last frame (s)"),
        ("frames/s", "frames/s"),
        ("server CPU ms/frame", "server CPU ms/frame"),
        ("client CPU ms/frame", "client CPU ms/frame"),
    ):
        print(f"  {label:<24}" + "".join(f" {medians[name][key]:>20.2f}" for name in names))
    ours, theirs = medians["ReadRoom"], medians["Orthanc"]
    ratio = ours["last frame s"] / theirs["last frame s"]
    met = "met" if ours["first frame ms"] < 300 else "NOT met"
    print(f"  first frame {ours['first frame ms']:.0f} ms (target < 300 ms) — {met}")
    met = "met" if ratio <= 1.0 else "NOT met"
    print(f"  ratio ReadRoom/Orthanc, whole series: {ratio:.2f} (target ≤ 1.0) — {met}")
    if FULL in medians:
        full = medians[FULL]["last frame s"] / theirs["last frame s"]
        print(f"  ratio {FULL}/Orthanc, whole series: {full:.2f} (the fast frame path off)")


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each slice")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (A B A B …)")
    parser.add_argument("--concurrency", type=int, default=6, help="requests in flight (a browser's 6)")
    parser.add_argument(
        "--full-path",
        action="store_true",
        help="ReadRoom with READROOM_DICOMWEB_FAST_FRAMES off only (default: both paths, fast as ReadRoom)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.slices, args.size, args.rounds = 4, 64, 1
    work = Path(tempfile.mkdtemp(prefix="rr-bench-viewer-"))
    env = bench_env(
        DATABASE,
        READROOM_STORAGE_DIR=str(work / "storage"),
        DJANGO_SETTINGS_MODULE="radiology.settings.production",
        SECRET_KEY=BENCH_SECRET,
        READROOM_STORAGE_KEY=BENCH_STORAGE_KEY,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SESSION_COOKIE_SECURE="false",  # plain HTTP on loopback; the cookie is sent by hand anyway
        LOG_LEVEL="WARNING",
    )
    try:
        database_migrated(DATABASE, env)
        shell(env, SETUP_FACILITY)
        subprocess.run(["redis-cli", "-n", redis_db(env), "flushdb"], check=True, capture_output=True)
        django_start(env)
        from django.conf import settings
        from django.db import connections
        from pydicom.uid import generate_uid

        from facilities.models import Facility

        reader = reader_create("dr_viewer", state="IL", privileged=True)
        cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie(reader)}"
        study_uid = generate_uid(prefix="2.25.")
        head_ct_claimed(Facility.objects.get(code="BENCH"), reader, TAG, study_uid)
        files = series_part10(study_uid, slices=args.slices, size=args.size)
        readroom_load_study(files)
        connections.close_all()
        port, full_port = free_port(), free_port()
        full_env = {**env, "READROOM_DICOMWEB_FAST_FRAMES": "false"}
        with (
            orthanc_running(work, dicomweb=True) as orthanc,
            deployed_processes(
                {"web": _web_command(port)}, full_env if args.full_path else env, [port], work / "logs"
            ) as web,
            contextlib.ExitStack() as more,
        ):
            if not args.full_path:  # the same build with the fast frame path off, beside it
                web_full = more.enter_context(
                    deployed_processes(
                        {"web-full": _web_command(full_port)}, full_env, [full_port], work / "logs"
                    )
                )
            for part10 in files:
                orthanc_store(orthanc, part10)
            headers = {"Cookie": cookie}
            sides = {"ReadRoom": Side(f"http://127.0.0.1:{port}/dicomweb", headers, web["web"].pid)}
            if not args.full_path:
                root = f"http://127.0.0.1:{full_port}/dicomweb"
                sides[FULL] = Side(root, headers, web_full["web-full"].pid)
            sides["Orthanc"] = Side(orthanc["dicomweb"], {}, orthanc["process"].pid)
            runs: dict[str, Callable[[], dict]] = {
                name: (lambda side=side: ohif_load(side, study_uid, args.concurrency))
                for name, side in sides.items()
            }
            for run in runs.values():  # warm-up: both uvicorn workers and Orthanc's caches, not counted
                for _ in range(2):
                    run()
            uptime_print("before")
            results = interleaved(runs, args.rounds)
        _report(results, slices=args.slices, size=args.size, concurrency=args.concurrency)
        uptime_print()
    finally:
        with contextlib.suppress(Exception):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
