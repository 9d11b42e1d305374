"""bench/priors — the time from an order's ACK to its patient's priors present (issue 17), and
whether they are there before the current study's images are complete (docs/priors.md).

A real Orthanc plays the hospital PACS on loopback (with its DICOMweb plugin), loaded with
``--priors`` prior chest CTs of ``--slices`` × 512² for each of three patients, one per method. Each
round is one deployment on a fresh copy of a migrated database (``hl7_listener``, a Celery worker,
``dicom_scp``), warmed up by an order for a patient the PACS holds nothing of. For each method
(C-MOVE into the SCP, C-GET and WADO-RS into the worker) an ORM^O01 goes over MLLP; the clock starts
at its ACK, when the modality also starts sending the current study into the SCP (storescu at
loopback speed, or paced by ``--current-rate`` images/s after ``--current-delay`` s: a scanner
sending as it reconstructs); it stops when every prior is retrieved (polled in the database) and the
current study's last image is answered, noting when the newest prior was there. The floor,
interleaved: dcmtk ``movescu`` → ``storescp``, ``getscu``, ``curl`` of WADO-RS (files only), newest
first, the same current study at the same pace into a storescp meanwhile; every dcmtk process with
TCP_NODELAY=1 (``--nagle-compare``: the floors without it too). Target: ReadRoom ≤ 1.5 × the floor,
and the priors present before the current study is complete (the newest, and all).

    .venv/bin/python bench/priors/run.py [--priors 3] [--slices 300] [--rounds 2]
        [--current-slices N] [--current-rate IMAGES_PER_S] [--current-delay S] [--nagle-compare]
        [--methods c-move,c-get,dicomweb] [--scp-processes 2] [--smoke]

ReadRoom fetches a retrieval's priors up to READROOM_PRIOR_PARALLEL at once (the environment's
setting reaches the deployed worker; 1: one after another).
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
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    SETUP_FACILITY,
    bench_database,
    bench_env,
    bench_parser,
    cpu_seconds,
    database_copy,
    database_migrated,
    deployed_processes,
    free_port,
    interleaved,
    orthanc_running,
    orthanc_store,
    row_count,
    uptime_print,
    wait_for_port,
)

ISSUER, PACS_AE, OUR_AE, FLOOR_AE, MODALITY_AE = "BENCH", "HOSP_PACS", "READROOM", "FLOOR", "BENCH_CT"
METHODS = ("c-move", "c-get", "dicomweb")
# One patient per method: the three are asked of one deployment, one after the other, and a
# patient's priors already here are never asked again.
MRNS = {method: f"BENCH-PRIOR-{n + 1}" for n, method in enumerate(METHODS)}
WARM_MRN = "BENCH-WARM-1"  # a patient the PACS holds nothing of: the warm-up order
# dcmtk 3.6.7 leaves Nagle's algorithm on unless the environment says TCP_NODELAY=1 (dcmnet's
# dul.cc / dulfsm.cc read it for every association; Orthanc gets it from bench.common too): without
# it every C-STORE of storescu waits ≈ 40 ms for a delayed ACK. The floor is the fastest honest
# dcmtk run, so every dcmtk process here has it; ``--nagle-compare`` also times the floors without.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
DCMTK_NAGLE_ENV = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}


def priors_load(pacs: dict, *, mrn: str, seed: int, priors: int, slices: int) -> list[str]:
    """A patient's priors into Orthanc over its REST API; their Study Instance UIDs."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings.base")
    from interfaces.simulator import exam_random, series_datasets

    uids = []
    for n in range(priors):
        exam = exam_random(random.Random(seed + n), "BENCH", stroke_rate=0.0)
        exam = dataclasses.replace(exam, mrn=mrn, family_name="PRIOR", given_name="BENCH")
        for ds in series_datasets(exam, slices=slices, size=512):
            ds.IssuerOfPatientID, ds.Modality = ISSUER, "CT"
            ds.StudyDescription, ds.StudyDate = "CT CHEST W CONTRAST", f"2025{n + 1:02d}01"
            buffer = BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            orthanc_store(pacs, buffer.getvalue())
        uids.append(str(ds.StudyInstanceUID))
    return uids


def _exam(mrn: str, n: int):
    from interfaces.simulator import exam_random

    return dataclasses.replace(exam_random(random.Random(900 + n), "BENCH", stroke_rate=0.0), mrn=mrn)


def current_write(mrn: str, n: int, slices: int, folder: Path) -> list[Path]:
    """The current study of order ``n`` (its accession and Study UID) as the modality's files."""
    from interfaces.simulator import series_datasets

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(series_datasets(_exam(mrn, n), slices=slices, size=512)):
        paths.append(folder / f"{k:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


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


def _sources_set(env: dict, sources: list[dict]) -> None:
    """The facility's prior sources, by psql: the worker reads them at each ``priors_fetch``."""
    database = env["DATABASE_URL"].rsplit("/", 1)[1]
    literal = json.dumps(sources).replace("'", "''")
    sql = f"UPDATE facilities_facility SET prior_sources = '{literal}'::jsonb WHERE code = 'BENCH'"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qc", sql], check=True)


def _order(mrn: str, n: int) -> bytes:
    """An ORM^O01 from the facility's RIS for ``mrn`` (issuer BENCH, PID-3.4), as the simulator sends."""
    from interfaces.simulator import order_message

    return order_message(_exam(mrn, n), ("BENCH_RIS", "BENCH"), f"PRIORS{n:05d}")


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


@dataclasses.dataclass
class Sending:
    """The modality's sending of the current study; ``ended``: when its last image was answered."""

    ended: float | None = None
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Pace:
    """How the modality sends the current study: ``rate`` images/s (0: as fast as the SCP answers,
    dcmtk storescu) after ``delay`` s from the ACK."""

    rate: float = 0.0
    delay: float = 0.0


def modality_send(files: list[Path], *, port: int, called: str, pace: Pace = Pace()) -> Sending:
    """The scanner sends the current study on one association, as a modality does: at loopback speed
    by dcmtk storescu, or paced (``pace.rate``, a scanner sending as it reconstructs) by pynetdicom,
    each image at its due time. A thread notes the moment the last is answered."""
    sending = Sending()

    def send() -> None:
        try:
            time.sleep(pace.delay)
            if pace.rate:
                _paced_send(files, port=port, called=called, rate=pace.rate)
            else:
                done = subprocess.run(
                    ["storescu", "-aet", MODALITY_AE, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=DCMTK_ENV,
                )  # fmt: skip
                if done.returncode:
                    raise RuntimeError(f"storescu failed: {done.stderr[-2000:]!r}")
        except Exception as exc:  # reported by modality_done
            sending.error = repr(exc)
        sending.ended = time.perf_counter()

    threading.Thread(target=send, daemon=True).start()
    return sending


def _paced_send(files: list[Path], *, port: int, called: str, rate: float) -> None:
    import socket

    from pydicom import dcmread
    from pynetdicom import AE

    datasets = [dcmread(path) for path in files]  # read before the clock: the pace is the scanner's
    ae = AE(ae_title=MODALITY_AE)
    ae.dimse_timeout = 120  # a loaded machine's storescp may take its time; the answer still counts
    for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        raise RuntimeError("the current study's association was refused")
    # as storescu with TCP_NODELAY=1: the pace, not Nagle, sets when an image goes
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        start = time.perf_counter()
        for k, ds in enumerate(datasets):
            if (wait := start + k / rate - time.perf_counter()) > 0:
                time.sleep(wait)
            status = assoc.send_c_store(ds, msg_id=k + 1)  # a modality numbers its messages
            if not status or status.Status != 0x0000:
                raise RuntimeError(f"C-STORE of image {k}: {status}")
    finally:
        assoc.release()


def modality_done(sending: Sending | None) -> float | None:
    """When the current study's last image was answered, or None: still sending."""
    if sending is None or sending.ended is None:
        return None
    if sending.error:
        raise RuntimeError(f"sending the current study failed: {sending.error}")
    return sending.ended


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (a prefork Celery worker's pool)."""
    total = cpu_seconds(pid)
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            total += sum(tree_cpu(int(child)) for child in children.read_text().split())
    return total


@dataclasses.dataclass
class Deployment:
    """One round's ReadRoom: a fresh copy of the migrated database, hl7_listener, the SCP and a
    Celery worker, warmed up by an order for a patient the PACS holds nothing of."""

    env: dict
    hl7_port: int
    our_port: int
    processes: dict


@contextlib.contextmanager
def readroom_deployed(
    template: str, our_port: int, pacs: dict, count: int, *, copy: bool = True, scp_processes: int = 2
):
    database = bench_database("priors") if copy else template
    store = tempfile.mkdtemp(prefix="rr-bench-priors-store-")
    env = bench_env(database, READROOM_STORAGE_DIR=store, READROOM_DICOM_AE_TITLE=OUR_AE)
    if copy:
        database_copy(template, database)
    _sources_set(env, [_source("c-move", pacs, count)])
    hl7_port = free_port()
    commands = {
        "hl7_listener": ["manage.py", "hl7_listener", "--port", str(hl7_port)],
        "worker": ["-m", "celery", "-A", "radiology", "worker", "-c", "2", "--loglevel", "WARNING"],
        "dicom_scp": ["manage.py", "dicom_scp", "--port", str(our_port), "--processes", str(scp_processes)],
    }
    try:
        with deployed_processes(commands, env, (hl7_port, our_port), Path(store) / "logs") as processes:
            # warm-up: a patient without priors, asked of the PACS like any (every process has served once)
            _acked(_order(WARM_MRN, 0), hl7_port)
            _wait_rows(env, "imaging_priorretrieval", "status IN ('retrieved', 'failed')", 1, timeout=120)
            yield Deployment(env, hl7_port, our_port, processes)
    finally:
        shutil.rmtree(store, ignore_errors=True)


@contextlib.contextmanager
def _poller(env: dict):
    """A query of the bench's database on one open connection (psycopg, Django's own driver),
    autocommit: each poll sees what is committed."""
    import psycopg

    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as connection:

        def poll(sql: str) -> tuple:
            return connection.execute(sql).fetchone()

        yield poll


def _scalar(env: dict, sql: str) -> str:
    database = env["DATABASE_URL"].rsplit("/", 1)[1]
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-tAc", sql],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def _latencies(env: dict, patient: str, acked_epoch: float) -> dict:
    """Where the time from the ACK goes before the first prior image, from the rows' own clocks
    (PostgreSQL's now() and the bench's time.time() read one machine clock): the order applied (a
    task), the first ``priors_fetch`` started (its PriorRetrieval), the first prior instance in."""
    row = _scalar(
        env,
        "SELECT extract(epoch FROM (SELECT min(created_at) FROM imaging_order WHERE " + patient + ")), "
        "extract(epoch FROM (SELECT min(created_at) FROM imaging_priorretrieval WHERE " + patient + ")), "
        "extract(epoch FROM (SELECT min(first_received_at) FROM imaging_study WHERE " + patient
        + " AND prior_state <> '')), "
        "(SELECT count(*) FROM imaging_priorretrieval WHERE " + patient + "), "
        "(SELECT count(*) FROM imaging_priorfetch WHERE retrieval_id IN (SELECT id FROM imaging_priorretrieval"
        " WHERE " + patient + "))",
    )  # fmt: skip
    order, asked, first, retrievals, fetches = row.split("|")
    return {
        "ACK→order applied s": float(order) - acked_epoch,
        "ACK→priors asked s": float(asked) - acked_epoch,
        "asked→1st prior image s": float(first) - float(asked),
        "retrievals": int(retrievals),
        "fetches": int(fetches),
    }


def readroom_fetch(method: str, n: int, *, deployment: Deployment, pacs: dict, count: int, files: int,
                   current: list[Path], newest: str, pace: Pace) -> dict:  # fmt: skip
    """One order's priors through the deployed processes: the clock starts at the ORM's ACK, the
    modality starts sending the current study (``current``) at that moment; stops when every prior
    is retrieved and the current study's last image was answered. CPU: the worker's (C-GET and
    WADO-RS land there) and the SCP's (the C-MOVE and the current study) in that window."""
    env, mrn = deployment.env, MRNS[method]
    _sources_set(env, [_source(method, pacs, count)])
    worker, scp = deployment.processes["worker"].pid, deployment.processes["dicom_scp"].pid
    before = {name: tree_cpu(pid) for name, pid in (("worker", worker), ("scp", scp))}
    patient = f"patient_id = (SELECT id FROM imaging_patient WHERE mrn = '{mrn}')"
    instances = f"series_id IN (SELECT s.id FROM imaging_series s JOIN imaging_study t ON t.id = s.study_id WHERE t.{patient} AND t.prior_state = 'retrieved')"
    # The timed loop polls on one open connection: a psql per poll (three per 50 ms) cost ≈ 40 ms
    # of client CPU and a backend fork each, ≈ 0.3 s wall under load 11 — CPU taken from ReadRoom's
    # processes on the same cores (the floors poll nothing), and a prior noticed up to a second late.
    with _poller(env) as poll:
        started = _acked(_order(mrn, n), deployment.hl7_port)
        acked_epoch = time.time() - (time.perf_counter() - started)
        sending = (
            modality_send(current, port=deployment.our_port, called=OUR_AE, pace=pace) if current else None
        )
        priors_done = current_done = newest_done = None
        deadline = time.monotonic() + 900
        while priors_done is None or (current and current_done is None):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method}: priors or the current study not complete after 900 s")
            if current_done is None:
                current_done = modality_done(sending)
            if priors_done is None:
                newest_in, retrieved = poll(
                    f"SELECT (SELECT count(*) FROM imaging_study WHERE study_instance_uid = '{newest}'"
                    f" AND prior_state = 'retrieved'), (SELECT count(*) FROM imaging_study WHERE {patient}"
                    " AND prior_state = 'retrieved')"
                )
                now = time.perf_counter()
                if newest_done is None and newest_in:
                    newest_done = now
                if retrieved >= count:
                    priors_done = now
            time.sleep(0.05)
    cpu = {name: tree_cpu(pid) - before[name] for name, pid in (("worker", worker), ("scp", scp))}
    failed = row_count(
        env,
        "imaging_priorfetch",
        f"status = 'failed' AND retrieval_id IN (SELECT id FROM imaging_priorretrieval WHERE {patient})",
    )
    indexed = row_count(env, "imaging_instance", instances)
    assert failed == 0, f"{failed} prior(s) failed"
    assert indexed == files, f"{indexed} of {files} prior instances indexed"
    figures = {"seconds": priors_done - started, "instances/s": files / (priors_done - started)}
    figures["newest prior s"] = (newest_done or priors_done) - started
    if current:
        figures["current complete s"] = current_done - started
        figures["priors first"] = "yes" if priors_done <= current_done else "NO"
        figures["newest first"] = (
            "yes" if figures["newest prior s"] <= figures["current complete s"] else "NO"
        )
    figures["worker CPU ms/prior inst"] = cpu["worker"] * 1000 / files
    figures["SCP CPU s"] = cpu["scp"]
    figures.update(_latencies(env, patient, acked_epoch))
    return figures


@contextlib.contextmanager
def floor_modality(current: list[Path], pace: Pace = Pace()):
    """The floor's current study: the same files by storescu into a dcmtk storescp (files only),
    sent while the floor fetches the priors, as ReadRoom's runs receive theirs. Yields a callable:
    when its last image was answered (waits for it)."""
    if not current:
        yield lambda: None
        return
    out, port = Path(tempfile.mkdtemp(prefix="rr-bench-floor-current-")), free_port()
    storescp = subprocess.Popen(
        ["storescp", "-aet", "FLOOR_CUR", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV,
    )  # fmt: skip
    try:
        wait_for_port(port)
        sending = modality_send(current, port=port, called="FLOOR_CUR", pace=pace)

        def done() -> float:
            while (finished := modality_done(sending)) is None:
                time.sleep(0.02)
            return finished

        yield done
    finally:
        storescp.terminate()
        storescp.wait(10)
        shutil.rmtree(out, ignore_errors=True)


def dcmtk_fetch(method: str, *, pacs: dict, uids: list[str], floor_port: int, files: int,
                current: list[Path], pace: Pace, nagle: bool = False) -> dict:  # fmt: skip
    """The floor: movescu → storescp (or getscu), one association per study, newest first, as
    ReadRoom does; its dcmtk processes with TCP_NODELAY=1 (``nagle``: without, for comparison)."""
    env = DCMTK_NAGLE_ENV if nagle else DCMTK_ENV
    out = Path(tempfile.mkdtemp(prefix="rr-bench-floor-"))
    storescp = None
    if method == "c-move":
        storescp = subprocess.Popen(
            ["storescp", "-aet", FLOOR_AE, "-od", str(out), str(floor_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        wait_for_port(floor_port)
    newest = None
    try:
        started = time.perf_counter()
        with floor_modality(current, pace) as current_done:
            for uid in reversed(uids):  # loaded oldest first: the newest prior first
                keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}"]
                if method == "c-move":
                    command = ["movescu", "-S", "-aet", "BENCH", "-aec", PACS_AE, "-aem", FLOOR_AE, *keys]
                else:
                    command = ["getscu", "-S", "-aet", "BENCH", "-aec", PACS_AE, "-od", str(out), *keys]
                subprocess.run(
                    [*command, "127.0.0.1", str(pacs["dicom_port"])], check=True, capture_output=True, env=env
                )
                newest = newest or time.perf_counter() - started
            elapsed = time.perf_counter() - started
            current_at = current_done()
        received = sum(1 for p in out.rglob("*") if p.is_file())
    finally:
        if storescp is not None:
            storescp.terminate()
            storescp.wait(10)
        shutil.rmtree(out, ignore_errors=True)
    assert received == files, f"{received} of {files} instances received by dcmtk"
    return _floor_figures(elapsed, files, current_at and current_at - started, newest)


def curl_fetch(*, pacs: dict, uids: list[str], files: int, current: list[Path], pace: Pace) -> dict:
    """The DICOMweb floor: each study's WADO-RS answer into one file by curl (nothing parsed, stored
    or indexed), one request per study, as ReadRoom does."""
    out = Path(tempfile.mkdtemp(prefix="rr-bench-curl-"))
    accept = 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*'
    newest = None
    try:
        started = time.perf_counter()
        with floor_modality(current, pace) as current_done:
            for n, uid in enumerate(reversed(uids)):  # newest first
                url = f"{pacs['dicomweb']}/studies/{uid}"
                subprocess.run(
                    ["curl", "-sSf", "-H", accept, "-o", str(out / f"{n}.multipart"), url], check=True
                )
                newest = newest or time.perf_counter() - started
            elapsed = time.perf_counter() - started
            current_at = current_done()
        parts = sum(p.read_bytes().count(b"Content-Type: application/dicom") for p in out.iterdir())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert parts == files, f"{parts} of {files} instances in curl's WADO-RS answers"
    return _floor_figures(elapsed, files, current_at and current_at - started, newest)


def _floor_figures(elapsed: float, files: int, current_seconds: float | None, newest: float | None) -> dict:
    figures = {"seconds": elapsed, "instances/s": files / elapsed, "newest prior s": newest or elapsed}
    if current_seconds is not None:
        figures["current complete s"] = current_seconds
    return figures


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--priors", type=int, default=3)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (A B C D A B C D)")
    parser.add_argument(
        "--current-slices", type=int, default=None,
        help="the current study the modality sends from the ACK on (default: --slices; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="which of c-move,c-get,dicomweb (each with its floor)"
    )
    parser.add_argument(
        "--current-rate", type=float, default=0.0, metavar="IMAGES_PER_S",
        help="the modality sends the current study at this pace (a scanner sending as it reconstructs;"
        " 0: as fast as the SCP answers, dcmtk storescu)",
    )  # fmt: skip
    parser.add_argument(
        "--current-delay", type=float, default=0.0, metavar="S",
        help="the current study's first image this long after the ACK (the patient on the table)",
    )  # fmt: skip
    parser.add_argument(
        "--nagle-compare", action="store_true",
        help="also time the dcmtk floors without TCP_NODELAY (dcmtk's default: Nagle's algorithm on)",
    )  # fmt: skip
    parser.add_argument(
        "--scp-processes", type=int, default=2,
        help="dicom_scp --processes (2, as deploy/ runs it; the C-MOVE's associations spread over them)",
    )  # fmt: skip
    args = parser.parse_args()
    args.pace = Pace(args.current_rate, args.current_delay)
    methods = args.method_list = tuple(m for m in METHODS if m in args.methods.split(","))
    if args.smoke:
        args.priors, args.slices, args.rounds = 2, 4, 1
    current_slices = args.slices if args.current_slices is None else args.current_slices
    if not shutil.which("Orthanc") and not Path("/usr/sbin/Orthanc").exists():
        sys.exit("bench/priors needs Orthanc as the PACS (apt-get install orthanc)")
    template = bench_database("priors_template")
    env = bench_env(template)
    _template_prepare(template, env)
    our_port, floor_port = free_port(), free_port()
    scratch = Path(tempfile.mkdtemp(prefix="rr-bench-priors-current-"))
    files = args.priors * args.slices
    try:
        with pacs_running(our_port, floor_port) as pacs, ThreadPoolExecutor(1) as loader:

            def load() -> tuple[dict, dict]:
                loading = time.perf_counter()
                uids = {
                    method: priors_load(pacs, mrn=MRNS[method], seed=700 + 10 * k, priors=args.priors, slices=args.slices)
                    for k, method in enumerate(METHODS)
                    if method in methods
                }  # fmt: skip
                current = {
                    method: current_write(MRNS[method], k + 1, current_slices, scratch / method) if current_slices else []
                    for k, method in enumerate(METHODS)
                    if method in methods
                }  # fmt: skip
                how = (
                    f"at {args.current_rate:g} images/s (pynetdicom, one association)"
                    if args.current_rate
                    else "by storescu at loopback speed"
                )
                print(
                    f"bench/priors: {args.priors} prior CT(s) of {args.slices} x 512x512 from Orthanc (the PACS)"
                    f" on loopback, {files} instances a patient (loaded in {time.perf_counter() - loading:.0f} s);"
                    f" the current study {current_slices} x 512x512 {how}, {args.current_delay:g} s after"
                    f" the ACK; {args.rounds} round(s), interleaved; ReadRoom timed from the ORM ACK;"
                    " dcmtk with TCP_NODELAY=1"
                )
                uptime_print("start")
                return uids, current

            # the PACS is loaded while the first round's processes start (neither is timed)
            loaded = loader.submit(load)
            results = _rounds(args, template, pacs, loaded, our_port, floor_port, files)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _report(results, files, bool(current_slices))


def _template_prepare(template: str, env: dict) -> None:
    """The migrated database the rounds copy, with the facility: set up in this process (a
    ``manage.py shell`` costs seconds of Django start)."""
    import django
    from django.core.management import call_command
    from django.db import connections

    database_migrated(template, env)
    os.environ["DATABASE_URL"] = env["DATABASE_URL"]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings.base")
    django.setup()
    # the PACS's own C-STOREs (the C-MOVE) arrive as a calling AE of the facility
    code = SETUP_FACILITY + f"DicomSender.objects.get_or_create(facility=f, ae_title={PACS_AE!r})\n"
    call_command("shell", command=code, verbosity=0)
    connections.close_all()  # a database copied from this one must have no session on it


def _rounds(args, template, pacs, loaded: Future, our_port, floor_port, files) -> dict[str, list[dict]]:
    """Each round one deployment serves the three methods' orders (one patient each), the floors
    interleaved between them (A B C D E F): no process start or database copy is timed. A single
    round runs on the prepared database itself (a copy is for rounds that must start alike)."""
    common = {"pacs": pacs, "files": files}
    results: dict[str, list[dict]] = {}
    for round_ in range(args.rounds):
        print(f"  round {round_ + 1} of {args.rounds}", flush=True)
        with readroom_deployed(
            template, our_port, pacs, args.priors, copy=args.rounds > 1, scp_processes=args.scp_processes
        ) as deployment:
            uids, current = loaded.result()
            runs = _round_runs(deployment, uids, current, args.priors, floor_port, common, args.pace)
            names = _names(args.method_list, nagle=args.nagle_compare)
            runs = {name: run for name, run in runs.items() if name in names}
            for name, rounds in interleaved(runs, 1, first=round_ + 1).items():
                results.setdefault(name, []).extend(rounds)
    return results


def _round_runs(
    deployment, uids: dict, current: dict, count: int, floor_port: int, common: dict, pace: Pace
) -> dict:
    """One round's runs, in the order they alternate: each ReadRoom method, then its floor(s)."""
    ours = {"deployment": deployment, "count": count, "pace": pace, **common}
    floors = {"floor_port": floor_port, "pace": pace, **common}

    def mine(method: str, n: int):
        return lambda: readroom_fetch(method, n, current=current[method], newest=uids[method][-1], **ours)

    def dcmtk(method: str, nagle: bool = False):
        return lambda: dcmtk_fetch(method, uids=uids[method], current=current[method], nagle=nagle, **floors)

    return {
        "ReadRoom C-MOVE": mine("c-move", 1),
        "movescu→storescp": dcmtk("c-move"),
        "movescu (Nagle)": dcmtk("c-move", nagle=True),
        "ReadRoom C-GET": mine("c-get", 2),
        "getscu": dcmtk("c-get"),
        "getscu (Nagle)": dcmtk("c-get", nagle=True),
        "ReadRoom DICOMweb": mine("dicomweb", 3),
        "curl WADO-RS": lambda: curl_fetch(
            uids=uids["dicomweb"], current=current["dicomweb"], pace=pace, **common
        ),
    }


PAIRS = {
    "c-move": ("ReadRoom C-MOVE", "movescu→storescp"),
    "c-get": ("ReadRoom C-GET", "getscu"),
    "dicomweb": ("ReadRoom DICOMweb", "curl WADO-RS"),
}
NAGLE = {"c-move": "movescu (Nagle)", "c-get": "getscu (Nagle)"}  # the floors as dcmtk runs by default


def _names(methods: tuple[str, ...], *, nagle: bool = False) -> set[str]:
    names = {name for method in methods for name in PAIRS[method]}
    return names | ({NAGLE[m] for m in methods if m in NAGLE} if nagle else set())


def _report(results: dict[str, list[dict]], files: int, with_current: bool) -> None:
    mean = {name: statistics.mean(r["seconds"] for r in rounds) for name, rounds in results.items()}
    for name, seconds in mean.items():
        print(f"  {name:<18} {seconds:7.2f} s to all priors present  ({files / seconds:.1f} instances/s)")
    pairs = [pair for pair in PAIRS.values() if pair[0] in results]
    for mine, floor in pairs:
        per_round = [a["seconds"] / b["seconds"] for a, b in zip(results[mine], results[floor], strict=True)]
        print(f"  ratio {mine}/{floor}  {', '.join(f'{r:.2f}' for r in per_round)}  (target <= 1.5)")
    for method, nagle in NAGLE.items():
        mine, floor = PAIRS[method][0], PAIRS[method][1]
        if nagle in results and mine in results:
            per_round = [
                a["seconds"] / b["seconds"] for a, b in zip(results[mine], results[nagle], strict=True)
            ]
            print(
                f"  ratio {mine}/{nagle}  {', '.join(f'{r:.2f}' for r in per_round)}  (the floor without"
                f" TCP_NODELAY; {floor} {statistics.mean(r['seconds'] for r in results[floor]):.2f} s vs"
                f" {statistics.mean(r['seconds'] for r in results[nagle]):.2f} s, {files} instances)"
            )
    for mine, _floor in pairs:
        for r in results[mine]:
            print(
                f"  {mine}: ACK→order applied {r['ACK→order applied s']:.2f} s, ACK→priors asked"
                f" {r['ACK→priors asked s']:.2f} s, asked→first prior image {r['asked→1st prior image s']:.2f} s;"
                f" {r['retrievals']} retrieval(s), {r['fetches']} fetch(es)"
            )
    if with_current:
        for mine, floor in pairs:
            for name in (mine, floor):
                rounds = results[name]
                all_ = ", ".join(f"{r['seconds']:.1f} vs {r['current complete s']:.1f} s" for r in rounds)
                newest = ", ".join(
                    f"{r['newest prior s']:.1f} vs {r['current complete s']:.1f} s" for r in rounds
                )
                every = all(r["seconds"] <= r["current complete s"] for r in rounds)
                first = all(r["newest prior s"] <= r["current complete s"] for r in rounds)
                print(
                    f"  before the current study is complete, {name}: newest prior {'yes' if first else 'NO'}"
                    f" ({newest}); all priors {'yes' if every else 'NO'} ({all_})"
                )
    uptime_print("end")


if __name__ == "__main__":
    main()
