"""Nothing ACKed is lost when the worker dies: messages stored and acknowledged while the worker is
down, or while it is killed -9 in the middle of applying them, are all applied — once — after a
worker comes back and the sweep runs. Real Celery worker processes on Redis and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from imaging.models import Order
from imaging.tasks import instances_display_check_task
from interfaces.hl7.inbound import hl7_frame_receive
from interfaces.models import InboundMessage, InboundStatus
from interfaces.tasks import hl7_inbound_drain_task, hl7_inbound_sweep
from tests import hl7_data
from tests.net import wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL or connection.vendor != "postgresql",
        reason="needs a real broker and a database another process can reach (CI: PostgreSQL + Redis)",
    ),
]


def start_worker(queue: str, loglevel: str = "WARNING", log: Path | None = None) -> subprocess.Popen:
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "radiology.settings.base",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_TASK_ALWAYS_EAGER": "false",
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "radiology",
        "worker",
        "-Q",
        queue,
        "-c",
        "1",
        "-P",
        "solo",
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        loglevel,
    ]
    output = open(log, "wb") if log else None  # noqa: SIM115 — the worker writes it until killed
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=output, stderr=output)


@contextlib.contextmanager
def override_orphan_age(seconds: float):
    import interfaces.tasks as tasks

    before, tasks.ORPHAN_AFTER_SECONDS = tasks.ORPHAN_AFTER_SECONDS, seconds
    try:
        yield
    finally:
        tasks.ORPHAN_AFTER_SECONDS = before


def processed() -> int:
    return InboundMessage.objects.filter(status=InboundStatus.PROCESSED).count()


# Orders enough for several apply batches (inbound.BATCH_MESSAGES, 100): the first batch commits
# 100 at once, and with only 120 a fast host applied the last 20 in the ~40 ms between the test seeing
# the first batch and its kill — the kill then landed on an idle worker and proved nothing.
KILLED_ORDERS = 600


def test_killed_worker_loses_nothing(chicago_interfaces, worker_queue):
    # given orders ACKed with no worker running (the tasks wait in the broker)
    for n in range(KILLED_ORDERS):
        receipt = hl7_frame_receive(
            raw=hl7_data.orm(accession=f"K{n:05d}", placer=f"KP{n}", filler=f"KF{n}").encode()
        )
        assert receipt.ack_code == "AA"
    hl7_inbound_drain_task.delay(*receipt.sender)
    # when a worker starts applying them and is killed -9 part-way
    worker = start_worker(worker_queue)
    try:
        wait_until(lambda: processed() >= 10)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        left = KILLED_ORDERS - processed()
        assert left > 0, "the worker finished before it could be killed; the test proves nothing"
        # then a new worker and the sweep apply the rest
        worker = start_worker(worker_queue)
        # the periodic sweep re-drains orphans older than 30 s; the test does not wait that long
        with override_orphan_age(0):
            hl7_inbound_sweep()
        wait_until(lambda: processed() == KILLED_ORDERS)
    finally:
        with contextlib.suppress(ProcessLookupError):  # already killed above, when an assert failed
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    # every order exactly once, nothing failed
    assert Order.objects.filter(accession_number__startswith="K").count() == KILLED_ORDERS
    assert not InboundMessage.objects.exclude(status=InboundStatus.PROCESSED).exists()


def test_an_order_queued_behind_a_studys_decode_checks_is_applied_before_them(
    chicago_interfaces, worker_queue, tmp_path
):
    # given a study's decode checks in the broker, then an order ACKed after them, no worker running
    for _ in range(20):
        instances_display_check_task.delay([])
    receipt = hl7_frame_receive(raw=hl7_data.orm(accession="PRI1", placer="PP1", filler="PF1").encode())
    assert receipt.ack_code == "AA"
    hl7_inbound_drain_task.delay(*receipt.sender)
    # when one worker (one task at a time) starts
    log = tmp_path / "worker.log"
    worker = start_worker(worker_queue, loglevel="INFO", log=log)
    try:
        wait_until(lambda: log.read_text().count(" received") >= 21, timeout=60)
        wait_until(lambda: Order.objects.filter(accession_number="PRI1").exists(), timeout=30)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    # then it took the order's apply first, the checks after it (they are on a lower priority step)
    taken = [line for line in log.read_text().splitlines() if line.endswith(" received")]
    assert len(taken) == 21, taken
    assert "interfaces.tasks.hl7_inbound_drain[" in taken[0], taken[:3]
