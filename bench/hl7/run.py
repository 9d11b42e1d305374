"""bench/hl7 — ORM^O01 messages over ONE persistent MLLP connection to `manage.py hl7_listener`
(production topology: PostgreSQL inbox, Redis broker). Each ACK is awaited before the next frame,
as an interface engine does. Prints messages/s and ACK latency p50/p99; then, with a Celery worker,
how long applying them takes.

    .venv/bin/python bench/hl7/run.py [--messages 5000] [--no-apply] [--smoke]     (or: make bench-hl7)

There is no peer on this path (Orthanc takes no HL7), so nothing runs interleaved.

The sender runs on uvloop, as the listener does (interfaces.runner.event_loop_run): on two cores the
sender's own event loop is part of every round trip, and an interface engine is not Python.

Targets (issue 3): >= 1,000 messages/s, p99 ACK < 20 ms."""

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
    free_port,
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
    args = parser.parse_args()
    if args.smoke:
        args.messages = 50
    database = bench_database("hl7")
    env = bench_env(database)
    database_migrated(database, env)
    shell(env, SETUP_FACILITY)
    subprocess.run(["redis-cli", "-n", redis_db(env), "flushdb"], check=True, capture_output=True)
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
    worker = subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "radiology", "worker", "-c", "2", "--loglevel", "WARNING"],
        cwd=ROOT,
        env=env,
    )
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


if __name__ == "__main__":
    main()
