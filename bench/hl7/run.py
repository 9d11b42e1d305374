"""bench/hl7 — ORM^O01 messages over ONE persistent MLLP connection to `manage.py hl7_listener`
(production topology: PostgreSQL inbox, Redis broker). Each ACK is awaited before the next frame,
as an interface engine does. Prints messages/s and ACK latency p50/p99; then, with a Celery worker,
how long applying them takes.

    .venv/bin/python bench/hl7/run.py [--messages 5000] [--no-apply | --apply] [--smoke]   (or: make bench-hl7)

Default: the ACKs timed with no worker, then a worker started to apply them all. ``--apply``: the
production shape (issue 16) — the Celery worker runs *while* the messages arrive; prints the ACK
rate under that load and how long after the last ACK every message is applied (every inbox row
processed and every order on the worklist's table). The smoke run uses ``--apply``.

There is no peer on this path (Orthanc takes no HL7), so nothing runs interleaved.

The sender runs on uvloop, as the listener does (interfaces.runner.event_loop_run): on two cores the
sender's own event loop is part of every round trip, and an interface engine is not Python.

Targets (issue 3): >= 1,000 messages/s, p99 ACK < 20 ms. Issue 16 (``--apply``): ACKs >= 1,000/s
while applying, every order applied within 10 s of the last ACK."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import uvloop
from hl7.mllp import open_hl7_connection

from bench.common import (
    PYTHON,
    ROOT,
    SETUP_FACILITY,
    bench_database,
    bench_env,
    bench_parser,
    cpu_seconds,
    database_migrated,
    deployed_processes,
    free_port,
    load_average,
    percentile,
    redis_db,
    row_count,
    shell,
    uptime_print,
    wait_for_port,
)

ORM = (
    "MSH|^~\\&|BENCH_RIS|BENCH|READROOM|READROOM|20261128031000||ORM^O01^ORM_O01|B{n:07d}|P|2.5.1\r"
    "PID|1||MRN{n:07d}^^^BENCH^MR||DOE^JANE||19600301|F\r"
    "PV1|1|O|RAD^^^BENCH\r"
    "ORC|NW|P{n:07d}^RIS|F{n:07d}^RIS||SC||^^^20261128031500^^R||20261128031000|||1234^WELBY^MARCUS\r"
    "OBR|1|P{n:07d}^RIS|F{n:07d}^RIS|71045^XR CHEST 1 VIEW^C4|||||||||COUGH|||1234^WELBY^MARCUS||A{n:07d}|RP{n}|SPS{n}||||CR\r"
)


async def send_all(port: int, count: int, first: int = 0) -> list[float]:
    reader, writer = await open_hl7_connection("127.0.0.1", port)
    latencies = []
    for n in range(first, first + count):
        frame = ORM.format(n=n).encode()
        started = time.perf_counter()
        writer.writeblock(frame)
        await writer.drain()
        ack = await reader.readblock()
        latencies.append(time.perf_counter() - started)
        if b"MSA|AA" not in ack:
            raise RuntimeError(f"message {n} not accepted: {ack!r}")
    writer.close()
    return latencies


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--no-apply", action="store_true", help="skip timing the Celery worker's apply")
    parser.add_argument("--apply", action="store_true", help="the worker applies while the messages arrive")
    parser.add_argument(
        "--worker-sched",
        choices=("batch", "other"),
        default="other",
        help="--apply: the worker's CPU scheduling policy (other: the default, as deployed; batch: SCHED_BATCH)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.apply = 50, not args.no_apply
    database = bench_database("hl7")
    env = bench_env(database)
    database_migrated(database, env)
    shell(env, SETUP_FACILITY)
    subprocess.run(["redis-cli", "-n", redis_db(env), "flushdb"], check=True, capture_output=True)
    if args.apply:
        apply_while_receiving(env, args.messages, warmup=20 if args.smoke else 200, sched=args.worker_sched)
        return
    port = free_port()
    listener = subprocess.Popen(
        [PYTHON, "manage.py", "hl7_listener", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        uvloop.run(send_all(port, 20 if args.smoke else 200, first=9_000_000))  # warm-up: connections, caches
        started, cpu = time.perf_counter(), cpu_seconds(listener.pid)
        latencies = uvloop.run(send_all(port, args.messages))
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(listener.pid) - cpu
    finally:
        listener.terminate()
        listener.wait(10)
    rate = args.messages / elapsed
    ms = [v * 1000 for v in latencies]
    print(f"bench/hl7: {args.messages} ORM^O01 on one MLLP connection, durable inbox on PostgreSQL")
    print(f"  throughput   {rate:8.0f} messages/s   (target >= 1000)")
    print(
        f"  ACK latency  p50 {percentile(ms, 50):.2f} ms   p99 {percentile(ms, 99):.2f} ms   max {max(ms):.2f} ms   (target p99 < 20 ms)"
    )
    print(f"  listener CPU {cpu / args.messages * 1000:8.2f} ms per message (all threads; load-independent)")
    uptime_print()
    if args.no_apply:
        return
    # applying: a real Celery worker drains the queued tasks
    worker = _worker(env)
    try:
        t0 = time.perf_counter()
        total = args.messages + (20 if args.smoke else 200)
        while row_count(env, "imaging_order") < total:
            if time.perf_counter() - t0 > 600:
                raise TimeoutError("orders not applied within 10 minutes")
            time.sleep(0.2 if args.smoke else 1)
        applied = time.perf_counter() - t0
    finally:
        worker.terminate()
        worker.wait(30)
    print(
        f"  applied      {total} orders by a 2-process Celery worker in {applied:.1f} s ({total / applied:.0f}/s, includes worker start-up)"
    )
    uptime_print("after applying")


# A real Celery worker, two processes (the machine's cores), as deployed.
WORKER = ["-m", "celery", "-A", "radiology", "worker", "-c", "2", "--loglevel", "WARNING"]


def _worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, *WORKER], cwd=ROOT, env=env)


def _tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children alive now (a Celery worker's pool processes)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return cpu_seconds(pid) + sum(cpu_seconds(int(child)) for child in children)


def _all_applied(env: dict, total: int) -> bool:
    return (
        row_count(env, "interfaces_inboundmessage", "status = 'received'") == 0
        and row_count(env, "imaging_order") >= total
    )


def _wait_applied(env: dict, total: int, poll: float, timeout: float = 600) -> float:
    """Seconds until every stored message is applied (none left ``received``, ``total`` orders)."""
    t0 = time.perf_counter()
    while not _all_applied(env, total):
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"orders not applied within {timeout:.0f} s")
        time.sleep(poll)
    return time.perf_counter() - t0


def apply_while_receiving(env: dict, messages: int, warmup: int, sched: str = "other") -> None:
    """Listener and worker both running: ACK rate while applying, and last ACK → all applied."""
    port = free_port()
    commands = {"hl7_listener": ["manage.py", "hl7_listener", "--port", str(port)], "worker": WORKER}
    logs = Path(env["READROOM_DATA_DIR"]) / "logs"
    # SCHED_BATCH (--worker-sched batch): the worker keeps its fair share of the CPU but is not
    # favoured at its wake-ups; nice 10 starved it on the shared machine (docs/ingest.md)
    batch = ["worker"] if sched == "batch" else []
    with deployed_processes(commands, env, [port], logs, batch=batch) as running:
        listener, worker = running["hl7_listener"], running["worker"]
        uvloop.run(send_all(port, warmup, first=9_000_000))  # warm-up: connections, caches, the worker
        _wait_applied(env, warmup, poll=0.2)
        started, cpu = time.perf_counter(), cpu_seconds(listener.pid)
        worker_cpu = _tree_cpu_seconds(worker.pid)
        latencies = uvloop.run(send_all(port, messages))
        last_ack = time.perf_counter()
        cpu = cpu_seconds(listener.pid) - cpu
        load = load_average()
        after = _wait_applied(env, warmup + messages, poll=0.05)
        worker_cpu = _tree_cpu_seconds(worker.pid) - worker_cpu
    elapsed = last_ack - started
    ms = [v * 1000 for v in latencies]
    print(
        f"bench/hl7: {messages} ORM^O01 on one MLLP connection, applied by a 2-process worker (SCHED_{sched.upper()}) meanwhile"
    )
    print(f"  ACK rate     {messages / elapsed:8.0f} messages/s while applying   (target >= 1000)")
    print(
        f"  ACK latency  p50 {percentile(ms, 50):.2f} ms   p99 {percentile(ms, 99):.2f} ms   max {max(ms):.2f} ms"
    )
    print(f"  listener CPU {cpu / messages * 1000:8.2f} ms per message")
    print(f"  last ACK → all applied  {after:.1f} s   (target < 10 s)   load at the last ACK {load}")
    print(f"  worker CPU   {worker_cpu / messages * 1000:8.2f} ms per message applied (all its processes)")
    uptime_print("after applying")


if __name__ == "__main__":
    main()
