"""bench/stroke_alert — how long a code stroke takes to reach an eligible neuro reader's open worklist,
multi-process as deployed: uvicorn (radiology.asgi), a Celery worker, `manage.py dicom_scp` and
`manage.py hl7_listener` on PostgreSQL + Redis (channels-redis carries the event from whichever
process routes the study to the reader's websocket in uvicorn).

A neuro reader (licence IL, privileges at the facility, on shift now, TOTP enrolled) has a verified
session; a websocket client holds /ws/worklist/ open with its cookie. Each round then times two paths:

* **images** — a stroke ORM^O01 (CT head, priority S, "CODE STROKE") is sent and applied first; then a
  20-slice CT series is C-STOREd by pynetdicom in this process. The SCP routes a stroke study at its
  first image (DESIGN.md §4), so the alert may arrive before the last C-STORE response: both
  "first C-STORE response → alert" and "last C-STORE response → alert" are reported (≤ 0: it came
  before the last image was stored).
* **order** — a 20-slice CT head series whose description names no stroke arrives first (it waits for
  its quiet period, unrouted); then the stroke ORM^O01 for its accession makes it a stroke study:
  MLLP ACK → alert (HL7 inbox → Celery worker applies the order → routes → event).

    PYTHONPATH=$PWD .venv/bin/python bench/stroke_alert/run.py [--rounds 20] [--smoke]   (or: make bench-stroke-alert)

The database is ``$READROOM_BENCH_DB_PREFIX_stroke`` (default readroom_bench_stroke), dropped and
re-created; Redis is ``REDIS_URL`` (db 9 unless set), flushed.

Target (issue 4): p95 < 1 s."""

from __future__ import annotations

import asyncio
import contextlib
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
    bench_parser,
    database_migrated,
    free_port,
    percentile,
    redis_db,
    shell,
    uptime_print,
    wait_for_port,
)

DATABASE = bench_database("stroke")  # READROOM_BENCH_DB_PREFIX, like the other benches
SLICES = 20


def django_start(env: dict) -> None:
    os.environ.update(env)
    import django

    django.setup()


def reader_create():
    """An eligible neuro reader at the bench facility, with a TOTP device, and a verified session."""
    from datetime import date, timedelta

    from django.conf import settings
    from django.contrib.auth.models import Group
    from django.test import Client
    from django.utils import timezone
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from accounts.models import User
    from accounts.roles import Role
    from credentialing.models import (
        FacilityPrivilege,
        LicenceStatus,
        PrivilegeStatus,
        RadiologistProfile,
        StateLicence,
        Subspecialty,
    )
    from facilities.models import Facility
    from worklist.models import Shift

    facility = Facility.objects.get(code="BENCH")
    user = User.objects.create_user(username="dr_stroke", display_name="Dr Stroke")
    user.groups.add(Group.objects.get(name=Role.RADIOLOGIST.value))
    profile = RadiologistProfile.objects.create(user=user)
    profile.subspecialties.set(Subspecialty.objects.filter(code=Subspecialty.NEURO))
    today = date.today()
    StateLicence.objects.create(
        profile=profile,
        state="IL",
        number="IL-036-999999",
        status=LicenceStatus.ACTIVE,
        issued_on=date(2019, 1, 1),
        expires_on=today + timedelta(days=365),
    )
    FacilityPrivilege.objects.create(
        profile=profile,
        facility=facility,
        status=PrivilegeStatus.APPROVED,
        applied_on=date(2024, 1, 2),
        granted_on=date(2024, 2, 1),
        expires_on=today + timedelta(days=365),
    )
    now = timezone.now()
    Shift.objects.create(
        radiologist=user, starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=8)
    )
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def order_frame(exam, n: int) -> bytes:
    from interfaces.simulator import order_message

    return order_message(exam, ("BENCH_RIS", "BENCH"), f"STROKE{n:05d}")


def exam_for(rng: random.Random):
    """A code-stroke CT head (CODE STROKE in the reason, priority S, from the ED)."""
    from interfaces.simulator import STROKE_PROCEDURE, exam_random

    exam = exam_random(rng, "BENCH", stroke_rate=1.0)
    return dataclasses.replace(exam, procedure=dataclasses.replace(STROKE_PROCEDURE, slices=SLICES))


def order_applied(accession: str, timeout: float = 30) -> None:
    from imaging.models import Order

    deadline = time.monotonic() + timeout
    while not Order.objects.filter(accession_number=accession).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"order {accession} not applied within {timeout} s")
        time.sleep(0.02)


def series_store(exam, port: int) -> list[float]:
    """C-STORE the exam's series over one association; the moment of each response."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    from interfaces.simulator import series_datasets

    # "CT HEAD W/O CONTRAST" / "AXIAL 5MM": nothing in the images says stroke; the order does
    datasets = list(series_datasets(exam, slices=SLICES, size=256))
    ae = AE(ae_title="BENCH_CT")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="READROOM")
    if not assoc.is_established:
        raise ConnectionError("association refused")
    responses = []
    try:
        for n, ds in enumerate(datasets, 1):
            status = assoc.send_c_store(ds, msg_id=n)
            responses.append(time.perf_counter())
            if getattr(status, "Status", 0xFFFF) != 0:
                raise RuntimeError(f"C-STORE refused: {status}")
    finally:
        assoc.release()
    return responses


def order_milestones(accession: str) -> tuple[float, float]:
    """When the worker committed the order, and when it routed the study (wall clock, seconds)."""
    from imaging.models import Order
    from worklist.models import StudyEvent, StudyEventKind

    order = Order.objects.get(accession_number=accession)
    routed = StudyEvent.objects.filter(study__accession_number=accession, kind=StudyEventKind.ROUTED).first()
    return order.created_at.timestamp(), routed.at.timestamp()


class Screen:
    """The reader's browser: a websocket on /ws/worklist/, every message kept with its arrival time."""

    def __init__(self) -> None:
        self.arrived: list[tuple[float, dict]] = []
        self._new = asyncio.Event()

    async def listen(self, url: str, cookie: str, origin: str, ready: asyncio.Event) -> None:
        import websockets

        async with websockets.connect(url, additional_headers={"Cookie": cookie}, origin=origin) as socket:
            ready.set()
            async for message in socket:
                self.arrived.append((time.perf_counter(), json.loads(message)))
                self._new.set()

    async def alert_for(self, accession: str, timeout: float = 30) -> float:
        deadline = time.perf_counter() + timeout
        while True:
            for at, event in self.arrived:
                if (
                    event.get("type") == "study.added"
                    and (event.get("study") or {}).get("accession") == accession
                ):
                    return at
            self._new.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"no study.added for {accession} within {timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)


async def rounds(ports: dict, cookie: str, count: int) -> dict[str, list[float]]:
    from hl7.mllp import open_hl7_connection

    screen = Screen()
    ready = asyncio.Event()
    web = f"127.0.0.1:{ports['web']}"
    listener = asyncio.create_task(screen.listen(f"ws://{web}/ws/worklist/", cookie, f"http://{web}", ready))
    await asyncio.wait_for(ready.wait(), 15)
    reader, writer = await open_hl7_connection("127.0.0.1", ports["hl7"])

    async def order_send(frame: bytes) -> float:
        writer.writeblock(frame)
        await writer.drain()
        ack = await reader.readblock()
        acked = time.perf_counter()
        if b"MSA|AA" not in ack:
            raise RuntimeError(f"order not accepted: {ack!r}")
        return acked

    rng = random.Random(36)
    figures: dict[str, list[float]] = {
        key: [] for key in ("first image", "last image", "order", "order applied", "order routed")
    }
    for n in range(count + 1):  # round 0 warms up every process
        # images path: the stroke order first, then the series
        exam = exam_for(rng)
        await order_send(order_frame(exam, 2 * n))
        await asyncio.to_thread(order_applied, exam.accession)
        responses = await asyncio.to_thread(series_store, exam, ports["dicom"])
        alerted = await screen.alert_for(exam.accession)
        # order path: the images first (not yet a stroke study: routed only when complete), then the order
        late = exam_for(rng)
        await asyncio.to_thread(series_store, late, ports["dicom"])
        acked = await order_send(order_frame(late, 2 * n + 1))
        acked_wall = time.time()
        late_alerted = await screen.alert_for(late.accession)
        applied, routed = await asyncio.to_thread(order_milestones, late.accession)
        if n:
            figures["first image"].append(alerted - responses[0])
            figures["last image"].append(alerted - responses[-1])
            figures["order"].append(late_alerted - acked)
            figures["order applied"].append(applied - acked_wall)
            figures["order routed"].append(routed - acked_wall)
        await asyncio.sleep(0.2)
    writer.close()
    listener.cancel()
    return figures


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.smoke:
        args.rounds = 1
    storage = tempfile.mkdtemp(prefix="rr-bench-stroke-")
    env = bench_env(DATABASE, READROOM_STORAGE_DIR=storage, ALLOWED_HOSTS="127.0.0.1,localhost,testserver")
    database_migrated(DATABASE, env)
    shell(env, SETUP_FACILITY)
    subprocess.run(["redis-cli", "-n", redis_db(env), "flushdb"], check=True, capture_output=True)
    django_start(env)
    cookie = reader_create()
    ports = {"web": free_port(), "hl7": free_port(), "dicom": free_port()}
    commands = {
        "web": [
            "-m",
            "uvicorn",
            "radiology.asgi:application",
            "--port",
            str(ports["web"]),
            "--log-level",
            "warning",
        ],
        "worker": ["-m", "celery", "-A", "radiology", "worker", "-c", "2", "--loglevel", "WARNING"],
        "hl7": ["manage.py", "hl7_listener", "--port", str(ports["hl7"])],
        "dicom": ["manage.py", "dicom_scp", "--port", str(ports["dicom"])],
    }
    logs = Path(storage) / "logs"
    logs.mkdir()
    with contextlib.ExitStack() as files:
        processes = [
            subprocess.Popen(
                [PYTHON, *command],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=files.enter_context((logs / name).open("wb")),
            )
            for name, command in commands.items()
        ]
        try:
            for port in ports.values():
                wait_for_port(port)
            figures = asyncio.run(rounds(ports, cookie, args.rounds))
        except Exception:
            for name in commands:
                print(f"--- {name} stderr (tail)\n" + (logs / name).read_text(errors="replace")[-3000:])
            raise
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
    shutil.rmtree(storage, ignore_errors=True)
    print(
        f"bench/stroke_alert: {args.rounds} rounds, {SLICES}-slice CT head, one reader's websocket "
        "(uvicorn + Celery worker + DICOM SCP + HL7 listener, PostgreSQL, Redis)"
    )
    labels = {
        "first image": "first C-STORE response → alert",
        "last image": "last C-STORE response → alert",
        "order": "stroke ORM ACK → alert (images already in)",
        "order applied": "  of which ACK → order applied (worker)",
        "order routed": "  of which ACK → study routed",
    }
    for key, label in labels.items():
        ms = [v * 1000 for v in figures[key]]
        print(
            f"  {label:<44} p50 {percentile(ms, 50):7.1f} ms  p95 {percentile(ms, 95):7.1f} ms"
            f"  max {max(ms):7.1f} ms" + ("" if label.startswith(" ") else "   (target p95 < 1000 ms)")
        )
    uptime_print()


if __name__ == "__main__":
    main()
