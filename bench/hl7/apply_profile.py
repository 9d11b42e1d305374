"""bench/hl7/apply_profile.py — what applying one ORM^O01 costs, in-process on PostgreSQL (issue 16).

Stores ``--messages`` fresh ORM^O01 through the listener's own path (``hl7_frame_receive``), then
times ``hl7_inbound_drain`` over them — the worker's task body, without Celery or sockets — and
prints per message: wall time, this process's CPU, the PostgreSQL backend's CPU (its /proc entry:
the database runs on this machine) and the statements sent. ``--rounds`` repeats with new
messages (new patients and orders each time, as a morning batch brings); ``--cprofile`` prints
where the Python time went in the last round.

    PYTHONPATH=$PWD .venv/bin/python bench/hl7/apply_profile.py [--messages 300] [--rounds 3] [--cprofile]

CPU per message is the figure to compare on a shared machine; wall time moves with the load."""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    SETUP_FACILITY,
    bench_database,
    bench_env,
    bench_parser,
    cpu_seconds,
    database_migrated,
    django_start,
    load_average,
    shell,
    uptime_print,
)
from bench.hl7.run import ORM


def _statement_kind(sql: str) -> str:
    word = sql.lstrip().split(None, 1)[0].upper()
    return "SAVEPOINT/RELEASE" if word in ("SAVEPOINT", "RELEASE") else word


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cprofile", action="store_true", help="print the top functions of the last round")
    parser.add_argument(
        "--trickle",
        type=int,
        default=0,
        help="store and drain this many at a time (a worker keeping up with arrivals: small batches)",
    )
    parser.add_argument(
        "--phases", action="store_true", help="split this process's CPU per message by phase of the apply"
    )
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=None,
        help="a batch's deadline (default: as deployed, interfaces.hl7.inbound.BATCH_SECONDS)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.rounds = 30, 1
    database = bench_database("hl7_profile")
    env = bench_env(database)
    database_migrated(database, env)
    shell(env, SETUP_FACILITY)
    django_start(env)

    from django.db import connection

    from interfaces.hl7 import inbound
    from interfaces.hl7.inbound import hl7_frame_receive, hl7_inbound_drain

    if args.batch_seconds is not None:
        inbound.BATCH_SECONDS = args.batch_seconds
    phases = _phases_patch() if args.phases else None

    statements: Counter[str] = Counter()

    def counted(execute, sql, params, many, context):
        statements[_statement_kind(sql)] += 1
        return execute(sql, params, many, context)

    print(f"bench/hl7/apply_profile: {args.messages} new ORM^O01 per round, applied in-process (PostgreSQL)")
    for round_ in range(args.rounds):
        first = 1_000_000 + round_ * args.messages
        step = args.trickle or args.messages
        chunks = [
            range(n, min(n + step, first + args.messages)) for n in range(first, first + args.messages, step)
        ]
        for n in chunks[0]:
            receipt = hl7_frame_receive(raw=ORM.format(n=n).encode(), peer="127.0.0.1:1")
            assert receipt.ack_code == "AA", receipt
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        statements.clear()
        if phases is not None:
            phases.update(dict.fromkeys(phases, 0.0))
        profile = cProfile.Profile() if args.cprofile and round_ == args.rounds - 1 else None
        db_cpu, cpu, wall = cpu_seconds(backend), time.process_time(), time.perf_counter()
        with connection.execute_wrapper(counted):
            if profile:
                profile.enable()
            applied = hl7_inbound_drain(sending_application="BENCH_RIS", sending_facility="BENCH")
            for chunk in chunks[1:]:  # the stores are counted too: they are a fraction of a drain
                for n in chunk:
                    hl7_frame_receive(raw=ORM.format(n=n).encode(), peer="127.0.0.1:1")
                applied += hl7_inbound_drain(sending_application="BENCH_RIS", sending_facility="BENCH")
            if profile:
                profile.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        db_cpu = cpu_seconds(backend) - db_cpu
        assert applied == args.messages, applied
        per = 1000 / args.messages
        kinds = ", ".join(f"{k} {v * per / 1000:.2f}" for k, v in statements.most_common())
        print(
            f"  round {round_ + 1}: {wall * per:6.2f} ms wall, {cpu * per:6.2f} ms CPU, "
            f"{db_cpu * per:5.2f} ms PostgreSQL CPU, {sum(statements.values()) / args.messages:5.2f} "
            f"statements per message ({kinds})   load {load_average()}"
        )
        if phases is not None:
            split = ", ".join(f"{name} {seconds * per:.2f}" for name, seconds in phases.items())
            print(
                f"      CPU ms per message by phase: {split}, the rest {(cpu - sum(phases.values())) * per:.2f}"
            )
        if round_ == args.rounds - 1:
            uptime_print()
        if profile:
            stats = pstats.Stats(profile).sort_stats("cumulative")
            stats.print_stats(45)
            stats.sort_stats("tottime").print_stats(25)


# Phases of a drain, each the CPU (time.process_time) of the functions named, calls within another
# phase's function not counted twice: outermost wins.
PHASES = (
    ("parse", "interfaces.hl7.inbound", "_parsed"),
    ("batch lookups", "imaging.services.KnownAbsent", "learn"),
    ("patient upsert", "imaging.services", "patient_upsert"),
    ("order upsert", "imaging.services", "_order_upsert"),
    ("image relink", "imaging.services", "orders_images_relink"),
    ("audit INSERT", "accounts.audit.AuditRowsDeferred", "write"),
    ("inbox UPDATE", "interfaces.hl7.inbound", "_settled_save"),
    ("application ACK", "interfaces.hl7.inbound", "_application_ack_send"),
)


def _phases_patch() -> dict[str, float]:
    import functools
    import importlib

    spent: dict[str, float] = {name: 0.0 for name, _, _ in PHASES}
    inside = [False]

    def timed(name, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if inside[0]:
                return function(*args, **kwargs)
            inside[0], started = True, time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - started
                inside[0] = False

        return wrapper

    for name, where, attribute in PHASES:
        module_name, _, class_name = where.rpartition(".")
        try:
            owner = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError):
            owner = importlib.import_module(where)
        setattr(owner, attribute, timed(name, getattr(owner, attribute)))
    return spent


if __name__ == "__main__":
    main()
