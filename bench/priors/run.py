"""bench/priors — the time from an order's ACK to its patient's priors present (issue 17).

A real Orthanc plays the hospital PACS on loopback (with its DICOMweb plugin), loaded with
``--priors`` prior chest CTs of ``--slices`` × 512² each for one patient. Each ReadRoom run is the
deployed path on a fresh copy of a migrated database: an ORM^O01 for that patient goes over MLLP to
``manage.py hl7_listener``; the clock starts when its ACK arrives; the order is applied, its
``priors_fetch`` task runs on a Celery worker (C-FIND or QIDO-RS by MRN and issuer, relevance, then
one C-MOVE / C-GET / WADO-RS per prior, every instance stored encrypted and indexed), and the clock
stops when every prior is retrieved (polled in the database). C-MOVE lands in ``manage.py
dicom_scp`` (the production SCP, its own process); C-GET and WADO-RS come back to the worker. Each
run first sends a warm-up order (a patient without priors), so the figure is not a process start.

The floor, interleaved in the same run: the same studies moved by dcmtk ``movescu`` into dcmtk
``storescp`` (files only, no index), fetched by dcmtk ``getscu``, and for DICOMweb by ``curl``
(WADO-RS into one file each, nothing parsed or stored). Target: ReadRoom ≤ 1.5 × the floor.

    .venv/bin/python bench/priors/run.py [--priors 3] [--slices 300] [--rounds 2] [--smoke]
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    PYTHON,
    ROOT,
    SETUP_FACILITY,
    bench_database,
    bench_env,
    bench_parser,
    database_copy,
    database_migrated,
    free_port,
    interleaved,
    orthanc_running,
    orthanc_store,
    row_count,
    shell,
    uptime_print,
    wait_for_port,
)

MRN, ISSUER, PACS_AE, OUR_AE, FLOOR_AE = "BENCH-PRIOR-1", "BENCH", "HOSP_PACS", "READROOM", "FLOOR"

# The facility's prior source, set on the run's database before its processes start.
SOURCE = """
import json
from facilities.models import Facility
f = Facility.objects.get(code="BENCH")
f.prior_sources = json.loads({sources!r})
f.save(update_fields=["prior_sources"])
"""
WARM_MRN = "BENCH-WARM-1"  # a patient the PACS holds nothing of: the warm-up order


def priors_load(pacs: dict, *, priors: int, slices: int) -> list[str]:
    """The patient's priors into Orthanc over its REST API; their Study Instance UIDs."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings.base")
    from interfaces.simulator import exam_random, series_datasets

    uids = []
    for n in range(priors):
        exam = exam_random(random.Random(700 + n), "BENCH", stroke_rate=0.0)
        exam = dataclasses.replace(exam, mrn=MRN, family_name="PRIOR", given_name="BENCH")
        for ds in series_datasets(exam, slices=slices, size=512):
            ds.IssuerOfPatientID, ds.Modality = ISSUER, "CT"
            ds.StudyDescription, ds.StudyDate = "CT CHEST W CONTRAST", f"2025{n + 1:02d}01"
            buffer = BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            orthanc_store(pacs, buffer.getvalue())
        uids.append(str(ds.StudyInstanceUID))
    return uids


@contextlib.contextmanager
def pacs_running(our_port: int, floor_port: int):
    """Orthanc as the hospital PACS (bench.common.orthanc_running, with DICOMweb): it knows ReadRoom's
    SCP and the floor's storescp as C-MOVE destinations."""
    work = Path(tempfile.mkdtemp(prefix="rr-bench-pacs-"))
    try:
        with orthanc_running(
            work, dicomweb=True, Name="bench-pacs", DicomAet=PACS_AE, DicomCheckCalledAet=True,
            DicomAlwaysAllowFind=True, DicomAlwaysAllowGet=True, DicomAlwaysAllowMove=True,
            DicomAlwaysAllowStore=True, StorageAccessOnFind="Always",
            DicomModalities={
                "readroom": [OUR_AE, "127.0.0.1", our_port], "floor": [FLOOR_AE, "127.0.0.1", floor_port]
            },
        ) as pacs:  # fmt: skip
            yield pacs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _source(method: str, pacs: dict, count: int) -> dict:
    source = {"name": "PACS", "method": method, "count": count, "lookback_days": 3650,
              "timeout_seconds": 120, "modalities": ["CT"], "body_parts": ["CHEST"]}  # fmt: skip
    if method == "dicomweb":
        return {**source, "base_url": pacs["dicomweb"]}
    return {**source, "host": "127.0.0.1", "port": pacs["dicom_port"], "called_ae_title": PACS_AE}


def _order(mrn: str, n: int) -> bytes:
    """An ORM^O01 from the facility's RIS for ``mrn`` (issuer BENCH, PID-3.4), as the simulator sends."""
    from interfaces.simulator import exam_random, order_message

    exam = dataclasses.replace(exam_random(random.Random(900 + n), "BENCH", stroke_rate=0.0), mrn=mrn)
    return order_message(exam, ("BENCH_RIS", "BENCH"), f"PRIORS{n:05d}")


def _acked(frame: bytes, port: int) -> float:
    """Send the order over MLLP; the moment its ACK (AA) arrived."""
    from interfaces.simulator import order_send

    ack = asyncio.run(order_send(frame, host="127.0.0.1", port=port))
    acked = time.perf_counter()
    if b"MSA|AA" not in ack:
        raise RuntimeError(f"order not accepted: {ack!r}")
    return acked


def _wait_rows(env: dict, table: str, where: str, count: int, timeout: float = 900) -> float:
    deadline = time.monotonic() + timeout
    while row_count(env, table, where) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{table} WHERE {where}: fewer than {count} rows after {timeout} s")
        time.sleep(0.05)
    return time.perf_counter()


def readroom_fetch(method: str, *, template: str, pacs: dict, our_port: int, count: int, files: int) -> dict:
    """One order's priors on a fresh copy of the migrated database, through the deployed processes:
    hl7_listener, a Celery worker, and (for C-MOVE) the SCP."""
    database = bench_database("priors")
    store = tempfile.mkdtemp(prefix="rr-bench-priors-store-")
    env = bench_env(database, READROOM_STORAGE_DIR=store, READROOM_DICOM_AE_TITLE=OUR_AE)
    database_copy(template, database)
    shell(env, SOURCE.format(sources=json.dumps([_source(method, pacs, count)])))
    hl7_port = free_port()
    commands = {
        "hl7_listener": ["manage.py", "hl7_listener", "--port", str(hl7_port)],
        "worker": ["-m", "celery", "-A", "radiology", "worker", "-c", "2", "--loglevel", "WARNING"],
    }
    if method == "c-move":
        commands["dicom_scp"] = ["manage.py", "dicom_scp", "--port", str(our_port)]
    logs = Path(store) / "logs"
    logs.mkdir()
    processes = []
    try:
        for name, command in commands.items():
            with (logs / name).open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [PYTHON, *command], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log
                    )
                )
        wait_for_port(hl7_port)
        if method == "c-move":
            wait_for_port(our_port)
        # warm-up: a patient without priors, asked of the PACS like any (every process has served once)
        _acked(_order(WARM_MRN, 0), hl7_port)
        _wait_rows(env, "imaging_priorretrieval", "status IN ('retrieved', 'failed')", 1, timeout=120)
        started = _acked(_order(MRN, 1), hl7_port)
        done = _wait_rows(env, "imaging_study", "prior_state = 'retrieved'", count)
    except Exception:
        for name in commands:
            print(f"--- {name} stderr (tail)\n" + (logs / name).read_text(errors="replace")[-3000:])
        raise
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:  # a worker still in a retry's back-off: the run is measured
                process.kill()
                process.wait()
    failed = row_count(env, "imaging_priorfetch", "status = 'failed'")
    indexed = row_count(env, "imaging_instance")
    shutil.rmtree(store, ignore_errors=True)
    assert failed == 0, f"{failed} prior(s) failed"
    assert indexed == files, f"{indexed} of {files} instances indexed"
    return {"seconds": done - started, "instances/s": files / (done - started)}


def dcmtk_fetch(method: str, *, pacs: dict, uids: list[str], floor_port: int, files: int) -> dict:
    """The floor: movescu → storescp (or getscu), one association per study, as ReadRoom does."""
    out = Path(tempfile.mkdtemp(prefix="rr-bench-floor-"))
    storescp = None
    if method == "c-move":
        storescp = subprocess.Popen(
            ["storescp", "-aet", FLOOR_AE, "-od", str(out), str(floor_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(floor_port)
    try:
        started = time.perf_counter()
        for uid in uids:
            keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}"]
            if method == "c-move":
                command = ["movescu", "-S", "-aet", "BENCH", "-aec", PACS_AE, "-aem", FLOOR_AE, *keys]
            else:
                command = ["getscu", "-S", "-aet", "BENCH", "-aec", PACS_AE, "-od", str(out), *keys]
            subprocess.run([*command, "127.0.0.1", str(pacs["dicom_port"])], check=True, capture_output=True)
        elapsed = time.perf_counter() - started
        received = sum(1 for p in out.rglob("*") if p.is_file())
    finally:
        if storescp is not None:
            storescp.terminate()
            storescp.wait(10)
        shutil.rmtree(out, ignore_errors=True)
    assert received == files, f"{received} of {files} instances received by dcmtk"
    return {"seconds": elapsed, "instances/s": files / elapsed}


def curl_fetch(*, pacs: dict, uids: list[str], files: int) -> dict:
    """The DICOMweb floor: each study's WADO-RS answer into one file by curl (nothing parsed, stored
    or indexed), one request per study, as ReadRoom does."""
    out = Path(tempfile.mkdtemp(prefix="rr-bench-curl-"))
    accept = 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*'
    try:
        started = time.perf_counter()
        for n, uid in enumerate(uids):
            url = f"{pacs['dicomweb']}/studies/{uid}"
            subprocess.run(["curl", "-sSf", "-H", accept, "-o", str(out / f"{n}.multipart"), url], check=True)
        elapsed = time.perf_counter() - started
        parts = sum(p.read_bytes().count(b"Content-Type: application/dicom") for p in out.iterdir())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert parts == files, f"{parts} of {files} instances in curl's WADO-RS answers"
    return {"seconds": elapsed, "instances/s": files / elapsed}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--priors", type=int, default=3)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (A B C D A B C D)")
    args = parser.parse_args()
    if args.smoke:
        args.priors, args.slices, args.rounds = 2, 4, 1
    if not shutil.which("Orthanc") and not Path("/usr/sbin/Orthanc").exists():
        sys.exit("bench/priors needs Orthanc as the PACS (apt-get install orthanc)")
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings.base")
    django.setup()
    template = bench_database("priors_template")
    env = bench_env(template)
    database_migrated(template, env)
    # the PACS's own C-STOREs (the C-MOVE) arrive as a calling AE of the facility
    shell(env, SETUP_FACILITY + f"DicomSender.objects.get_or_create(facility=f, ae_title={PACS_AE!r})\n")
    our_port, floor_port = free_port(), free_port()
    with pacs_running(our_port, floor_port) as pacs:
        loading = time.perf_counter()
        uids = priors_load(pacs, priors=args.priors, slices=args.slices)
        files = args.priors * args.slices
        print(
            f"bench/priors: {args.priors} prior CT(s) of {args.slices} x 512x512 from Orthanc (the PACS) on"
            f" loopback, {files} instances (loaded in {time.perf_counter() - loading:.0f} s);"
            f" {args.rounds} round(s), interleaved; ReadRoom timed from the ORM ACK"
        )
        uptime_print("start")
        common = {"pacs": pacs, "files": files}
        ours = {"template": template, "our_port": our_port, "count": args.priors, **common}
        runs = {
            "ReadRoom C-MOVE": lambda: readroom_fetch("c-move", **ours),
            "movescu→storescp": lambda: dcmtk_fetch("c-move", uids=uids, floor_port=floor_port, **common),
            "ReadRoom C-GET": lambda: readroom_fetch("c-get", **ours),
            "getscu": lambda: dcmtk_fetch("c-get", uids=uids, floor_port=floor_port, **common),
            "ReadRoom DICOMweb": lambda: readroom_fetch("dicomweb", **ours),
            "curl WADO-RS": lambda: curl_fetch(uids=uids, **common),
        }
        results = interleaved(runs, args.rounds)
    mean = {name: statistics.mean(r["seconds"] for r in rounds) for name, rounds in results.items()}
    for name, seconds in mean.items():
        print(f"  {name:<18} {seconds:7.2f} s to all priors present  ({files / seconds:.1f} instances/s)")
    pairs = (
        ("ReadRoom C-MOVE", "movescu→storescp"),
        ("ReadRoom C-GET", "getscu"),
        ("ReadRoom DICOMweb", "curl WADO-RS"),
    )
    for mine, floor in pairs:
        per_round = [a["seconds"] / b["seconds"] for a, b in zip(results[mine], results[floor], strict=True)]
        print(f"  ratio {mine}/{floor}  {', '.join(f'{r:.2f}' for r in per_round)}  (target <= 1.5)")
    uptime_print("end")


if __name__ == "__main__":
    main()
