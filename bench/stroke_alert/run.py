"""bench/stroke_alert — how long a code stroke takes to reach the readers' and operations' screens,
multi-process as deployed: uvicorn (radiology.asgi), a Celery worker, `manage.py dicom_scp` and
`manage.py hl7_listener` on PostgreSQL + Redis (channels-redis carries the event from whichever
process routes the study to the readers' websockets in uvicorn).

The cast (issue 14): ``--readers`` eligible neuro readers (licence IL, privileges at the facility, on
shift now, TOTP enrolled) with verified sessions, each holding ``/ws/worklist/`` open as every page's
live channel does (``static/readroom/live.js``); one reader licensed only in WI (must hear nothing);
an operations user's socket. With Chromium (``--browser``, default when /usr/bin/chromium exists) the
first reader also has the **report editor** of a study they hold open and the second the **viewer**
of another, and operations the **interfaces page**, each in its own browser context with its
session cookie: "on screen" there is the moment live.js put the banner in the page (a
MutationObserver's clock; the same machine's clock as the ACK's). The facility's 2-minute step is
set to 0 minutes, so the operations alert (their first, the ``stroke_readers`` step) is due at
routing: ACK → ops banner is ACK → routed → step timer (Celery ``eta``) → event → page.

Each round times two paths:

* **images** — a stroke ORM^O01 (CT head, priority S, "CODE STROKE") is sent and applied first; then a
  20-slice CT series is C-STOREd by pynetdicom in this process. The SCP routes a stroke study at its
  first image (DESIGN.md §4), so the alert may arrive before the last C-STORE response: both
  "first C-STORE response → alert" and "last C-STORE response → alert" are reported (≤ 0: it came
  before the last image was stored).
* **order** — a 20-slice CT head series whose description names no stroke arrives first (it waits for
  its quiet period, unrouted); then the stroke ORM^O01 for its accession makes it a stroke study:
  MLLP ACK → alert (HL7 inbox → Celery worker applies the order → routes → event) on every reader's
  socket, the editor and viewer pages, and operations' socket and page.

    PYTHONPATH=$PWD .venv/bin/python bench/stroke_alert/run.py [--rounds 20] [--readers 8] [--no-browser] [--smoke]
    (or: make bench-stroke-alert)

The database is ``$READROOM_BENCH_DB_PREFIX_stroke`` (default readroom_bench_stroke), dropped and
re-created; Redis is ``REDIS_URL`` (db 9 unless set), flushed.

Target (issues 4 and 14): p95 < 1 s, on the editor page and on the ops page too."""

from __future__ import annotations

import argparse
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
from collections.abc import Callable
from pathlib import Path

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
    percentile,
    reader_create,
    redis_db,
    session_cookie,
    shell,
    uptime_print,
)

CHROMIUM = os.environ.get("READROOM_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
DATABASE = bench_database("stroke")  # READROOM_BENCH_DB_PREFIX, like the other benches
SLICES = 20


def web_application():
    """radiology.asgi with its static files served from the source folders, as the tests' server
    does (Django's ASGIStaticFilesHandler): a deploy's collectstatic compresses every file, minutes on
    a loaded machine, and the pages need only live.js and the CSS. Everything else is as deployed."""
    from django.conf import settings
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    # before anything renders {% static %}: without collectstatic there is no manifest to look in
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }

    from radiology.asgi import application

    return ASGIStaticFilesHandler(application)


def held_study_create(reader, n: int) -> int:
    """A routine CT head routed and claimed by ``reader``: the study on their editor or viewer."""

    from bench.common import head_ct_claimed
    from facilities.models import Facility

    facility = Facility.objects.get(code="BENCH")
    return head_ct_claimed(facility, reader, f"HELD{n}", f"2.25.{9_000_000 + n}")


@dataclasses.dataclass
class Cast:
    readers: list[str]  # session cookie values of the eligible readers, the first ones on pages
    elsewhere: str  # the reader licensed only in WI
    operations: str
    editor_study: int  # held by readers[0]
    viewer_study: int  # held by readers[1]


def cast_create(readers: int) -> Cast:
    from django.contrib.auth.models import Group

    from accounts.models import User
    from accounts.roles import Role
    from facilities.models import Facility

    # the 2-minute step at once: operations' first alert is due at routing (see the module doc)
    Facility.objects.filter(code="BENCH").update(stroke_readers_minutes=0)
    eligible = [reader_create(f"dr_stroke_{n}", state="IL", privileged=True) for n in range(readers)]
    elsewhere = reader_create("dr_wisconsin", state="WI", privileged=False)
    ops = User.objects.create_user(username="ops_bench", display_name="Ops Bench")
    ops.groups.add(Group.objects.get(name=Role.OPERATIONS.value))
    return Cast(
        readers=[session_cookie(user) for user in eligible],
        elsewhere=session_cookie(elsewhere),
        operations=session_cookie(ops),
        editor_study=held_study_create(eligible[0], 1),
        viewer_study=held_study_create(eligible[min(1, readers - 1)], 2),
    )


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


def study_ids(accessions: list[str]) -> dict[str, int]:
    from imaging.models import Study

    return dict(Study.objects.filter(accession_number__in=accessions).values_list("accession_number", "pk"))


READER_STEPS = ("stroke_alert", "stroke_readers")
OPERATIONS_STEPS = ("stroke_readers", "stroke_director")


def raises_banner(event: dict, steps: tuple[str, ...]) -> bool:
    """live.js's ``onEvent``: which events put a code-stroke banner up for a user with ``steps``."""
    study = event.get("study") or {}
    if not study.get("is_stroke") or study.get("claimed_by") is not None:
        return False
    if event.get("type") == "alert":  # sent before the rows (worklist.broadcast.study_alert_event)
        return event.get("step") in steps
    if event.get("type") in ("study.added", "study.updated"):
        return "stroke_alert" in steps
    if event.get("type") == "study.escalated":
        return (event.get("escalation") or {}).get("step") in steps
    return False


class Screen:
    """A page's live channel: a websocket on /ws/worklist/, every message kept with its arrival time."""

    def __init__(self, steps: tuple[str, ...]) -> None:
        self.steps = steps
        self.arrived: list[tuple[float, dict]] = []
        self._new = asyncio.Event()

    async def listen(self, url: str, cookie: str, origin: str, ready: asyncio.Event) -> None:
        import websockets

        async with websockets.connect(url, additional_headers={"Cookie": cookie}, origin=origin) as socket:
            ready.set()
            async for message in socket:
                self.arrived.append((time.perf_counter(), json.loads(message)))
                self._new.set()

    def about(self, accessions: set[str]) -> list[dict]:
        return [e for _, e in self.arrived if (e.get("study") or {}).get("accession") in accessions]

    async def alert_for(self, accession: str, timeout: float = 30) -> float:
        return await self.event_at(accession, lambda event: raises_banner(event, self.steps), timeout)

    async def event_at(self, accession: str, wanted: Callable[[dict], bool], timeout: float = 30) -> float:
        """When the first event about ``accession`` that is ``wanted`` arrived (perf_counter)."""
        deadline = time.perf_counter() + timeout
        while True:
            for at, event in self.arrived:
                if (event.get("study") or {}).get("accession") == accession and wanted(event):
                    return at
            self._new.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"no such event for {accession} within {timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)


# Installed in each browser page once it has loaded: when live.js adds a banner, its wall-clock time
# (ms since the epoch, performance.timeOrigin-based for sub-ms resolution) by study id.
BANNER_CLOCK = """() => {
  window.__rrBanners = {};
  const seen = (node) => {
    if (node.nodeType === 1 && node.matches('.live-alert[data-study-id]') && !(node.dataset.studyId in window.__rrBanners))
      window.__rrBanners[node.dataset.studyId] = performance.timeOrigin + performance.now();
  };
  new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach(seen)))
    .observe(document.getElementById('live-channel'), {childList: true, subtree: true});
}"""


class Pages:
    """Chromium: the first reader's report editor, the second's viewer, operations' interfaces page."""

    def __init__(self) -> None:
        self.playwright = None
        self.browser = None
        self.pages: dict[str, object] = {}

    async def open(self, web: str, cast: Cast) -> None:
        from django.conf import settings
        from playwright.async_api import async_playwright

        self.playwright = await async_playwright().start()
        self.browser = await self.playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        views = {
            "report editor": (cast.readers[0], f"/studies/{cast.editor_study}/report/"),
            "viewer": (cast.readers[min(1, len(cast.readers) - 1)], f"/studies/{cast.viewer_study}/viewer/"),
            "ops interfaces page": (cast.operations, "/operations/interfaces/"),
        }
        for name, (cookie, path) in views.items():
            context = await self.browser.new_context()
            await context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": f"http://{web}"}]
            )
            page = await context.new_page()
            await page.goto(f"http://{web}{path}")
            await page.wait_for_selector('#live-channel[data-state="live"]', state="attached", timeout=30_000)
            await page.evaluate(BANNER_CLOCK)
            self.pages[name] = page

    async def banner_at(self, name: str, study_id: int, timeout: float = 30) -> float:
        """Wall-clock seconds at which the page showed the banner of ``study_id``."""
        page = self.pages[name]
        handle = await page.wait_for_function(
            f"() => window.__rrBanners['{study_id}']", timeout=timeout * 1000, polling=50
        )
        return await handle.json_value() / 1000

    async def close(self) -> None:
        if self.browser is not None:
            await self.browser.close()
        if self.playwright is not None:
            await self.playwright.stop()


async def rounds(ports: dict, cast: Cast, count: int, browser: bool) -> dict[str, list[float]]:
    from hl7.mllp import open_hl7_connection

    web = f"127.0.0.1:{ports['web']}"
    from django.conf import settings

    def cookie(value: str) -> str:
        return f"{settings.SESSION_COOKIE_NAME}={value}"

    readers = [Screen(READER_STEPS) for _ in cast.readers]
    elsewhere = Screen(READER_STEPS)
    operations = Screen(OPERATIONS_STEPS)
    listeners = []
    for screen, value in [
        *zip(readers, cast.readers, strict=True),
        (elsewhere, cast.elsewhere),
        (operations, cast.operations),
    ]:
        ready = asyncio.Event()
        listeners.append(
            asyncio.create_task(
                screen.listen(f"ws://{web}/ws/worklist/", cookie(value), f"http://{web}", ready)
            )
        )
        await asyncio.wait_for(ready.wait(), 15)
    pages = Pages() if browser else None
    if pages is not None:
        await pages.open(web, cast)
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
    figures: dict[str, list[float]] = {key: [] for key in LABELS}
    strokes: set[str] = set()
    try:
        for n in range(count + 1):  # round 0 warms up every process
            # images path: the stroke order first, then the series
            exam = exam_for(rng)
            strokes.add(exam.accession)
            await order_send(order_frame(exam, 2 * n))
            await asyncio.to_thread(order_applied, exam.accession)
            responses = await asyncio.to_thread(series_store, exam, ports["dicom"])
            alerted = await readers[0].alert_for(exam.accession)
            # order path: the images first (not yet a stroke study: routed only when complete), then the order
            late = exam_for(rng)
            strokes.add(late.accession)
            await asyncio.to_thread(series_store, late, ports["dicom"])
            acked = await order_send(order_frame(late, 2 * n + 1))
            acked_wall = time.time()
            reader_alerts = [await screen.alert_for(late.accession) for screen in readers]
            ops_alerted = await operations.alert_for(late.accession)
            applied, routed = await asyncio.to_thread(order_milestones, late.accession)
            on_pages = {}
            if pages is not None:
                study_id = (await asyncio.to_thread(study_ids, [late.accession]))[late.accession]
                for name in pages.pages:
                    on_pages[name] = await pages.banner_at(name, study_id) - acked_wall
            if n:
                figures["first image"].append(alerted - responses[0])
                figures["last image"].append(alerted - responses[-1])
                figures["order"].append(reader_alerts[0] - acked)
                figures["order applied"].append(applied - acked_wall)
                figures["order routed"].append(routed - acked_wall)
                figures["every reader"].extend(at - acked for at in reader_alerts)
                figures["slowest reader"].append(max(reader_alerts) - acked)
                figures["ops socket"].append(ops_alerted - acked)
                for name, seconds in on_pages.items():
                    figures[name].append(seconds)
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # anything late for the reader licensed elsewhere would come by now
        heard = elsewhere.about(strokes)
        if heard:
            raise AssertionError(f"the reader licensed only in WI heard of {len(heard)} code strokes' events")
    finally:
        writer.close()
        if pages is not None:
            await pages.close()
        for listener in listeners:
            listener.cancel()
    return figures


LABELS = {
    "first image": "first C-STORE response → alert",
    "last image": "last C-STORE response → alert",
    "order": "stroke ORM ACK → alert (images already in)",
    "order applied": "  of which ACK → order applied (worker)",
    "order routed": "  of which ACK → study routed",
    "every reader": "stroke ORM ACK → alert, every reader's socket",
    "slowest reader": "stroke ORM ACK → alert, slowest reader",
    "report editor": "stroke ORM ACK → banner on the report editor",
    "viewer": "stroke ORM ACK → banner on the viewer page",
    "ops socket": "stroke ORM ACK → ops alert (2-min step at 0)",
    "ops interfaces page": "stroke ORM ACK → banner on the ops page",
}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--readers", type=int, default=8, help="eligible readers' sockets (≥ 2)")
    parser.add_argument(
        "--browser",
        action=argparse.BooleanOptionalAction,
        default=os.path.exists(CHROMIUM),
        help=f"the editor, viewer and ops pages in Chromium ({CHROMIUM})",
    )
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.readers = 1, 2
    args.readers = max(2, args.readers)
    storage = tempfile.mkdtemp(prefix="rr-bench-stroke-")
    env = bench_env(DATABASE, READROOM_STORAGE_DIR=storage, ALLOWED_HOSTS="127.0.0.1,localhost,testserver")
    database_migrated(DATABASE, env)
    shell(env, SETUP_FACILITY)
    subprocess.run(["redis-cli", "-n", redis_db(env), "flushdb"], check=True, capture_output=True)
    django_start(env)
    cast = cast_create(args.readers)
    ports = {"web": free_port(), "hl7": free_port(), "dicom": free_port()}
    commands = {
        "web": [
            "-m",
            "uvicorn",
            "--factory",
            "bench.stroke_alert.run:web_application",
            "--port",
            str(ports["web"]),
            "--log-level",
            "warning",
        ],
        "worker": ["-m", "celery", "-A", "radiology", "worker", "-c", "2", "--loglevel", "WARNING"],
        "hl7": ["manage.py", "hl7_listener", "--port", str(ports["hl7"])],
        "dicom": ["manage.py", "dicom_scp", "--port", str(ports["dicom"])],
    }
    with deployed_processes(commands, env, ports.values(), Path(storage) / "logs"):
        figures = asyncio.run(rounds(ports, cast, args.rounds, args.browser))
    shutil.rmtree(storage, ignore_errors=True)
    pages = "; Chromium: report editor, viewer, ops interfaces page" if args.browser else "; no browser"
    print(
        f"bench/stroke_alert: {args.rounds} rounds, {SLICES}-slice CT head, {args.readers} eligible readers'"
        f" sockets + one licensed elsewhere (heard nothing) + operations{pages}"
        " (uvicorn + Celery worker + DICOM SCP + HL7 listener, PostgreSQL, Redis)"
    )
    for key, label in LABELS.items():
        if not figures[key]:
            continue
        ms = [v * 1000 for v in figures[key]]
        print(
            f"  {label:<47} p50 {percentile(ms, 50):7.1f} ms  p95 {percentile(ms, 95):7.1f} ms"
            f"  max {max(ms):7.1f} ms" + ("" if label.startswith(" ") else "   (target p95 < 1000 ms)")
        )
    uptime_print()


if __name__ == "__main__":
    main()
