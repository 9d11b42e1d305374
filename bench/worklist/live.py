"""bench/worklist --http: the worklist as deployed, under the load the issue names (issue 16).

uvicorn with ``--web-workers`` workers (2, as the deploy files run it) and the production settings serves the generated archive. ``--readers``
readers (on shift, TOTP-verified sessions) each hold ``/ws/worklist/`` open and poll — the API
(``/api/v1/worklist/``) and the page's rows partial (``/worklist/rows/``) in turn, ``--think``
seconds apart — while studies arrive at ``--arrivals`` per second at the readers' facilities and are
routed (the fan-out: each eligible reader's socket is sent their row). Each websocket client
*applies* the event to its copy of the list (inserts the row in reading order or removes it), and
the time from the routing commit to that is "event → row applied", for every reader the study was
eligible for among the measured ones (a reader that never got it counts as missing).

Three processes besides uvicorn, so the clients' own work does not sit in one GIL with the events'
timing: the pollers (a thread per reader), the arrivals (routing in this bench's Django, as a Celery
worker or the SCP would), and the screens (asyncio, this process)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import http.client
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

from bench.common import PYTHON, ROOT, cpu_seconds, free_port, percentile, uptime_print, wait_for_port

START_DELAY = 3.0  # seconds for every socket to open before the clock starts
DRAIN = 15.0  # seconds to wait after the last arrival for its events (late ones are counted, not lost)


def http_run(env: dict, cookies: dict[int, str], facility_ids: list[int], args) -> None:
    from django.db import connections

    server_env = {
        **env,
        "DJANGO_SETTINGS_MODULE": "radiology.settings.production",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
    }
    port = free_port()
    log = Path(env["READROOM_DATA_DIR"]) / "uvicorn.log"
    for old in [
        *log.parent.glob("server-timing-*.jsonl"),
        *log.parent.glob("server-sql-*.jsonl"),
    ]:  # a --reuse run's records are its own
        old.unlink()
    with log.open("wb") as errors:
        server = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "uvicorn",
                "bench.worklist.timed_asgi:application"
                if args.server_timing
                else "radiology.asgi:application",
                "--port",
                str(port),
                "--workers",
                str(args.web_workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=server_env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,  # its own process group: the workers are stopped with it
        )
    try:
        wait_for_port(port, timeout=60)
        _warm_up(port, next(iter(cookies.values())), args.web_workers)
        figures = _run(port, server.pid, cookies, facility_ids, args, connections)
    except Exception:
        print(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:  # a worker stuck on an open socket
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    _print(figures, args)
    if args.server_timing:
        _server_timing_print(log.parent, figures["window"])


def _warm_up(port: int, cookie: str, workers: int) -> None:
    """Every worker imports, connects and fills its caches before the clock starts (the kernel
    spreads the connections; four per worker reach them all in practice)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(4 * workers):
        connection.request("GET", "/api/v1/worklist/", headers={"Cookie": cookie})
        connection.getresponse().read()
        connection.close()


def _workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def _run(port, server_pid, cookies, facility_ids, args, connections) -> dict:
    connections.close_all()  # the children open their own
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start = time.time() + START_DELAY
    until = start + args.seconds
    pollers = context.Process(
        target=_poll, args=(port, list(cookies.values()), start, until, args.think, results)
    )
    arrivals = context.Process(
        target=_arrive, args=(facility_ids, sorted(cookies), start, until, args.arrivals, results)
    )
    workers = _workers(server_pid)
    cpu_before = sum(cpu_seconds(w) for w in workers)
    database = os.environ["DATABASE_URL"].rsplit("/", 1)[1]
    postgres_before, machine_before = _postgres_cpu(database), _machine_cpu()
    started, screens_cpu = time.time(), time.process_time()
    pollers.start()
    arrivals.start()
    applied = asyncio.run(_screens(port, cookies, until + (8.0 if args.smoke else DRAIN)))
    gathered = {}
    for _ in range(2):
        kind, payload = results.get(timeout=120)
        gathered[kind] = payload
    pollers.join(30)
    arrivals.join(30)
    cpu = sum(cpu_seconds(w) for w in workers) - cpu_before
    postgres_after = _postgres_cpu(database)
    busy, total = (after - before for after, before in zip(_machine_cpu(), machine_before, strict=True))
    # Where the two cores went over the run: the web workers, PostgreSQL's backends for this
    # database, this bench's own clients (they share the cores: the load is measured on
    # one machine), and everything else the machine ran meanwhile (other users' processes).
    split = {
        "seconds": time.time() - started,
        "web": cpu,
        "postgres": sum(v - postgres_before.get(pid, 0.0) for pid, v in postgres_after.items()),
        "pollers": gathered["polls"].pop("cpu"),
        "arrivals": gathered["arrivals"]["cpu"],
        "screens": time.process_time() - screens_cpu,
        "machine busy": busy,
        "machine total": total,
    }
    return {
        "window": (start, until),
        "applied": applied,
        "cpu": cpu,
        "split": split,
        **gathered,
        "arrivals": gathered["arrivals"]["studies"],
    }


def _postgres_cpu(database: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to ``database`` (same machine)."""
    import subprocess as sp

    out = sp.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-tAc",
            f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}'",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = {}
    for pid in map(int, out.split()):
        with contextlib.suppress(OSError):  # a backend that ended meanwhile
            cpu[pid] = cpu_seconds(pid)
    return cpu


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every core (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / tick, sum(fields) / tick


# --- the readers polling ---------------------------------------------------------------------------


def _poll(port: int, cookies: list[str], start: float, until: float, think: float, results) -> None:
    latencies: dict[str, list[float]] = {"api": [], "page": []}
    failures: list[str] = []
    lock = threading.Lock()

    def reader(cookie: str, offset: float) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Cookie": cookie, "X-ReadRoom-Poll": "1", "Accept": "application/json"}
        urls = (("api", "/api/v1/worklist/"), ("page", "/worklist/rows/"))
        time.sleep(max(0.0, start - time.time() + offset))
        n = 0
        while time.time() < until:
            kind, url = urls[n % 2]
            n += 1
            started = time.perf_counter()
            connection.request("GET", url, headers=headers)
            response = connection.getresponse()
            response.read()
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                if response.status == 200:
                    latencies[kind].append(elapsed)
                else:
                    failures.append(f"{url} {response.status}")
            time.sleep(think)
        connection.close()

    spread = think / max(1, len(cookies))  # the readers do not all ask in the same millisecond
    threads = [threading.Thread(target=reader, args=(c, i * spread)) for i, c in enumerate(cookies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(("polls", {"latencies": latencies, "failures": failures, "cpu": time.process_time()}))


# --- the studies arriving --------------------------------------------------------------------------

PROCEDURES = (
    ("70450", "CT HEAD W/O CONTRAST", "CT"),
    ("71045", "XR CHEST 1 VIEW", "CR"),
    ("74177", "CT ABDOMEN PELVIS W CONTRAST", "CT"),
    ("71250", "CT CHEST W/O CONTRAST", "CT"),
)


def _arrive(facility_ids, reader_ids, start: float, until: float, rate: float, results) -> None:
    import random

    from channels.layers import channel_layers
    from django.db import transaction
    from django.utils import timezone

    from credentialing.eligibility import eligible_readers
    from imaging.models import Order, Patient, Study, StudyStatus
    from worklist.services import study_route

    channel_layers.backends.clear()  # this process's own connections
    rng = random.Random(16)
    run = int(start) % 100_000  # this run's own identifiers: a --reuse run meets the last run's studies
    measured = set(reader_ids)
    arrived = []
    n = 0
    while True:
        due = start + n / rate
        if due >= until:
            break
        time.sleep(max(0.0, due - time.time()))
        n += 1
        code, text, modality = rng.choice(PROCEDURES)
        facility_id = rng.choice(facility_ids)
        committed: list[float] = []
        with transaction.atomic():
            patient = Patient.objects.create(
                facility_id=facility_id, mrn=f"HTTP{run}-{n}", assigning_authority="BENCH", sex="F"
            )
            order = Order.objects.create(
                facility_id=facility_id,
                patient=patient,
                accession_number=f"H{run}-{n}",
                procedure_code=code,
                procedure_text=text,
            )
            now = timezone.now()
            study = Study.objects.create(
                facility_id=facility_id,
                order=order,
                patient=patient,
                study_instance_uid=f"1.2.826.0.1.3680043.10.916.{run}.{n}",
                accession_number=f"H{run}-{n}",
                modalities=modality,
                status=StudyStatus.COMPLETE,
                first_received_at=now,
                last_received_at=now,
                completed_at=now,
            )
            # runs first after the commit, before the broadcast study_route queues
            transaction.on_commit(lambda done=committed: done.append(time.time()))
            study_route(study_id=study.pk)
        sent = time.time()
        # by id: routing classified the study (its subspecialty) in the database, not on this object
        expected = sorted(measured & {u.pk for u in eligible_readers(study.pk, timezone.now())})
        arrived.append({"study": study.pk, "at": committed[0], "sent": sent, "expected": expected})
    results.put(("arrivals", {"studies": arrived, "cpu": time.process_time()}))


# --- the readers' screens ----------------------------------------------------------------------------


class Screen:
    """A reader's page as worklist.js keeps it: rows in reading order, each event applied."""

    def __init__(self, reader_id: int) -> None:
        self.reader_id = reader_id
        self.keys: list[str] = []
        self.rows: dict[int, tuple[str, str]] = {}
        self.applied: dict[int, float] = {}
        self.events = 0

    def apply(self, event: dict) -> None:
        self.events += 1
        change, study = event.get("row"), event.get("study") or {}
        if not change or "id" not in study:
            return
        sid = study["id"]
        if sid in self.rows:
            self.keys.remove(self.rows.pop(sid)[0])
        if change["op"] == "upsert":
            bisect.insort(self.keys, change["sort"])
            self.rows[sid] = (change["sort"], change["html"])
        self.applied.setdefault(sid, time.time())

    async def listen(self, port: int, cookie: str, until: float, ready: asyncio.Event) -> None:
        import websockets

        url, origin = f"ws://127.0.0.1:{port}/ws/worklist/", f"http://127.0.0.1:{port}"
        async with websockets.connect(
            url, additional_headers={"Cookie": cookie}, origin=origin, open_timeout=60
        ) as socket:
            ready.set()
            while (left := until - time.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    self.apply(json.loads(await asyncio.wait_for(socket.recv(), left)))


async def _screens(port: int, cookies: dict[int, str], until: float) -> dict[int, dict[int, float]]:
    screens = [Screen(reader_id) for reader_id in cookies]
    readies = [asyncio.Event() for _ in screens]
    tasks = [
        asyncio.create_task(screen.listen(port, cookies[screen.reader_id], until, ready))
        for screen, ready in zip(screens, readies, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), START_DELAY + 30)
    await asyncio.gather(*tasks)
    print(f"  (screens received {sum(s.events for s in screens)} events)", flush=True)
    return {screen.reader_id: screen.applied for screen in screens}


# --- the figures -------------------------------------------------------------------------------------


def _print(figures: dict, args) -> None:
    polls, arrivals, applied = figures["polls"], figures["arrivals"], figures["applied"]
    print(
        f"bench/worklist --http: uvicorn --workers {args.web_workers} (production settings), {args.readers} readers polling"
        f" (API and rows partial in turn, {args.think:g} s apart) with /ws/worklist/ open, studies arriving"
        f" {args.arrivals:g}/s for {args.seconds:g} s"
    )
    requests = 0
    for kind, label in (("api", "GET /api/v1/worklist/"), ("page", "GET /worklist/rows/")):
        ms = polls["latencies"][kind]
        requests += len(ms)
        if ms:
            print(
                f"  {label:<24} n {len(ms):5d}  p50 {percentile(ms, 50):6.1f} ms  p95 {percentile(ms, 95):6.1f} ms"
                f"  max {max(ms):6.1f} ms   (target p95 < 150 ms)"
            )
    if polls["failures"]:
        print(f"  failed requests: {len(polls['failures'])} (first: {polls['failures'][0]})")
    lags, missing, told = [], 0, []
    for arrival in arrivals:
        told.append(len(arrival["expected"]))
        for reader in arrival["expected"]:
            at = applied.get(reader, {}).get(arrival["study"])
            if at is None:
                missing += 1
            else:
                lags.append((at - arrival["at"]) * 1000)
    if lags:
        print(
            f"  event → row applied      n {len(lags):5d}  p50 {percentile(lags, 50):6.1f} ms  p95"
            f" {percentile(lags, 95):6.1f} ms  max {max(lags):6.1f} ms   (target p95 < 1000 ms); missing {missing}"
        )
    sends = [(a["sent"] - a["at"]) * 1000 for a in arrivals]
    if sends:
        print(
            f"  fan-out per event        {len(arrivals)} studies, {statistics.mean(told):.1f} measured readers"
            f" eligible each; audience + render + send p50 {percentile(sends, 50):.1f} ms p95 {percentile(sends, 95):.1f} ms"
        )
    if requests:
        print(
            f"  web CPU per request      {figures['cpu'] / requests * 1000:6.1f} ms (both workers, sockets included)"
        )
    split = figures["split"]
    cores = split["machine total"] / split["seconds"]
    clients = split["pollers"] + split["arrivals"] + split["screens"]
    others = split["machine busy"] - split["web"] - split["postgres"] - clients
    print(
        f"  CPU over the run, in cores ({cores:.0f} on the machine, {split['seconds']:.0f} s):"
        + "".join(
            f" {name} {seconds / split['seconds']:.2f};"
            for name, seconds in (
                ("web workers", split["web"]),
                ("PostgreSQL", split["postgres"]),
                ("bench clients", clients),
                ("  of which pollers", split["pollers"]),
                ("arrivals", split["arrivals"]),
                ("screens", split["screens"]),
                ("everything else", others),
                ("idle", split["machine total"] - split["machine busy"]),
            )
        )
    )
    uptime_print("--http")


def _server_timing_print(directory: Path, window: tuple[float, float]) -> None:
    """Where the web workers' time went, per request of the measured window (bench/worklist/timed_asgi.py):
    the median and p95 of each part, and the mean of each part over the slowest 5 % (what the tail is)."""
    records = [
        json.loads(line)
        for path in directory.glob("server-timing-*.jsonl")
        for line in path.read_text().splitlines()
    ]
    texts = {
        entry["key"]: entry["sql"]
        for path in directory.glob("server-sql-*.jsonl")
        for entry in map(json.loads, path.read_text().splitlines())
    }
    parts = ("app", "to_thread", "thread_wall", "thread_cpu", "queries", "gil_wait")
    print("  server timing (inside the web workers; gil_wait = thread wall - thread CPU - queries):")
    for label, prefix in (
        ("GET /api/v1/worklist/", "/api/v1/worklist/"),
        ("GET /worklist/rows/", "/worklist/rows/"),
    ):
        rows = [r for r in records if r["path"] == prefix and window[0] <= r["at"] <= window[1] + 5]
        if not rows:
            continue
        for r in rows:
            r["gil_wait"] = max(0.0, r["thread_wall"] - r["thread_cpu"] - r["queries"])
        tail = sorted(rows, key=lambda r: r["app"])[-max(1, len(rows) // 20) :]
        print(f"    {label} n {len(rows)}, {statistics.mean(r['n_queries'] for r in rows):.1f} queries each")
        for part in parts:
            values = [r[part] for r in rows]
            print(
                f"      {part:<12} p50 {percentile(values, 50):6.1f} ms  p95 {percentile(values, 95):6.1f} ms"
                f"  mean of the slowest 5 % {statistics.mean(r[part] for r in tail):6.1f} ms"
            )
        _statements_print(rows, tail, texts)


def _statements_print(rows: list[dict], tail: list[dict], texts: dict[str, str]) -> None:
    """The statements that took the most of these requests' SQL time: mean ms per request over all
    and over the slowest 5 %, and the start of each statement's text."""
    totals: dict[str, float] = {}
    for r in rows:
        for key, ms in r["sql"].items():
            totals[key] = totals.get(key, 0.0) + ms
    for key in sorted(totals, key=totals.get, reverse=True)[:5]:
        slow = statistics.mean(r["sql"].get(key, 0.0) for r in tail)
        text = " ".join(texts.get(key, "?").split())
        print(f"        {totals[key] / len(rows):6.1f} ms ({slow:6.1f} in the slowest 5 %)  {text[:150]}")
