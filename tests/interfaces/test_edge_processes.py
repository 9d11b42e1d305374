"""``dicom_scp --processes N`` and ``hl7_listener --processes N`` (issue 16, docs/ingest.md "Several
processes on one port"): the real commands as deployed, two children accepting on one socket bound
by their supervising parent, real dcmtk storescu / pynetdicom SCU and real MLLP. A child killed with
SIGKILL fails its own association (the sender sees it and sends again), is replaced, and the
replacement serves; SIGTERM to the parent lets an open association finish."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import hl7
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from hl7.mllp import open_hl7_connection
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from imaging.models import Instance, Order
from interfaces.dicom.receive import PROCESS_DIED, dicom_associations_of_previous_run_close
from interfaces.models import DicomAssociation, InboundMessage, InboundStatus
from interfaces.supervisor import replacement_delay
from tests import hl7_data
from tests.interfaces.test_dicom_scp import write_series
from tests.net import free_port, port_open, wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the processes share PostgreSQL"),
]


# --- the processes ---------------------------------------------------------------------------------


def child_pids(parent: int) -> list[int]:
    """The parent's live children, from /proc (every process's stat names its parent)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == parent and stat[0] != "Z":
                    pids.append(int(entry.name))
    return sorted(pids)


@contextlib.contextmanager
def edge_command(command: str, tmp_path: Path, *args: str, environment: dict[str, str] | None = None):
    """``manage.py <command> --processes 2`` on the test database; yields (process, port, log).
    The environment is this process's without the web pool's size, which importing radiology.asgi
    (an earlier test on this worker) leaves in it, plus ``environment``."""
    db = connection.settings_dict
    port = free_port()
    log = tmp_path / f"{command}.log"
    inherited = {k: v for k, v in os.environ.items() if k != "READROOM_DB_POOL_MAX_SIZE"}
    env = {
        **inherited,
        **(environment or {}),
        "DJANGO_SETTINGS_MODULE": "radiology.settings.base",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        "CELERY_TASK_ALWAYS_EAGER": "true",  # orders applied in the listener: no worker needed here
        "READROOM_STORAGE_DIR": str(tmp_path / "storage"),
        "READROOM_STORAGE_FSYNC": "false",
        "LOG_LEVEL": "INFO",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            command,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--processes",
            "2",
            *args,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )
    try:
        wait_until(lambda: _serving(process, log, 2), timeout=60, message="the children did not start")
        yield process, port, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        with connection.cursor() as cursor:  # the children's pooled sessions, so the flush is not blocked
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        print(log.read_text()[-20000:])  # shown when the test fails


def _serving(process: subprocess.Popen, log: Path, children: int) -> bool:
    assert process.poll() is None, log.read_text()[-3000:]
    return len(child_pids(process.pid)) == children and log.read_text().count(" listening on ") >= children


def _replaced(process: subprocess.Popen, gone: int) -> list[int]:
    pids: list[int] = []

    def replaced() -> bool:
        pids[:] = child_pids(process.pid)
        return len(pids) == 2 and gone not in pids

    wait_until(replaced, timeout=30, message="the dead child was not replaced")
    return pids


def peer_process(children: list[int], port: int, client_port: int) -> int:
    """Which child holds the connection from ``client_port`` to ``port`` (its socket's inode in
    /proc/net/tcp, found among the child's descriptors)."""
    wanted = f"0100007F:{port:04X} 0100007F:{client_port:04X}"
    inode = next(line.split()[9] for line in Path("/proc/net/tcp").read_text().splitlines() if wanted in line)
    for pid in children:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
    raise AssertionError(f"no child holds the connection from port {client_port}")


@contextlib.contextmanager
def stopped(pid: int):
    """SIGSTOP: the process accepts nothing until SIGCONT (so the other child must serve). Returns
    once every thread of it is stopped, not when kill() returns: the kernel wakes one thread for the
    signal, and only when that thread next runs does it stop the others. Until then they run on,
    and on a loaded machine the child's accepting thread took the connection the test opened next,
    then stopped holding it: the other child never saw it and the SCU's ACSE timeout ran out (the
    flaky "replacement never answered the A-ASSOCIATE-RQ", docs/ingest.md)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: _every_thread_stopped(pid), timeout=10, message=f"pid {pid} did not stop")
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _every_thread_stopped(pid: int) -> bool:
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in "TtZX" for state in states)  # stopped (or gone)


_SPINNING = """
import threading, time
def spin():
    while True:
        pass
for _ in range(4):
    threading.Thread(target=spin, daemon=True).start()
time.sleep(120)
"""


def _cpu_ticks(pid: int) -> int:
    utime, stime = (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[11:13]
    return int(utime) + int(stime)


def test_stopped_returns_once_no_thread_of_the_process_runs():
    # given a process whose threads all run (as a child's accept, association and DUL threads may)
    busy = subprocess.Popen([sys.executable, "-c", _SPINNING])
    try:
        wait_until(lambda: len(list(Path(f"/proc/{busy.pid}/task").iterdir())) == 5, timeout=10)
        # when the test stops it / then from the moment stopped() yields nothing of it runs: every
        # thread is stopped and its CPU time stands still (kill() alone returns before that)
        with stopped(busy.pid):
            assert _every_thread_stopped(busy.pid)
            before = _cpu_ticks(busy.pid)
            time.sleep(0.3)
            assert _cpu_ticks(busy.pid) == before
        wait_until(lambda: _cpu_ticks(busy.pid) > before, timeout=10, message="SIGCONT did not resume it")
    finally:
        busy.kill()
        busy.wait()


def _scu_association(port: int):
    ae = AE(ae_title="LAKESHORE_CT1")
    ae.dimse_timeout = ae.acse_timeout = 10
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="READROOM")
    assert assoc.is_established
    return assoc


def _stored(assoc, ds) -> bool:
    try:
        status = assoc.send_c_store(ds)
    except RuntimeError:  # pynetdicom: the association is no longer established
        return False
    return bool(status) and status.Status == 0x0000


# --- DICOM -----------------------------------------------------------------------------------------


def test_two_scp_processes_on_one_port_index_every_image_of_concurrent_associations(
    chicago_interfaces, tmp_path
):
    # An environment file shared by every unit that turns the web's pool on: the parent's start-up
    # sweep then opens that pool, and before the supervisor closed it at each fork the children
    # shared its sessions (C-STOREs failed with "INTRANS" and other associations' results).
    shared_environment = {"READROOM_DB_POOL_MAX_SIZE": "16"}
    with edge_command("dicom_scp", tmp_path, environment=shared_environment) as (scp, port, _log):
        # when four modalities send a series each at the same time
        series = [write_series(_dir(tmp_path, n), slices=3, seed=40 + n)[1] for n in range(4)]
        senders = [
            subprocess.Popen(
                [
                    "storescu",
                    "-aet",
                    "LAKESHORE_CT1",
                    "-aec",
                    "READROOM",
                    "127.0.0.1",
                    str(port),
                    *map(str, p),
                ],
                env={**os.environ, "TCP_NODELAY": "1"},
                stderr=subprocess.PIPE,
                text=True,
            )
            for p in series
        ]
        results = [(s.wait(60), s.stderr.read()) for s in senders]
        # then every association succeeded and every image is indexed once
        assert [code for code, _ in results] == [0] * 4, results
        assert Instance.objects.count() == 12
        sent = {dcmread(p).SOPInstanceUID for paths in series for p in paths}
        assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == sent
        wait_until(lambda: DicomAssociation.objects.filter(ended_at__isnull=False).count() == 4, timeout=10)
        assert sorted(DicomAssociation.objects.values_list("instances_stored", flat=True)) == [3] * 4
        # and more associations one after another to one process than its pool holds connections
        # (34): each hands its connection back when it ends, so none waits for one
        ae = AE(ae_title="LAKESHORE_CT1")
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.dimse_timeout = 5
        with stopped(child_pids(scp.pid)[0]):
            for _ in range(settings.READROOM_DICOM_MAX_ASSOCIATIONS + 4):
                assoc = ae.associate("127.0.0.1", port, ae_title="READROOM")
                assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
                assoc.release()


def test_a_killed_scp_child_fails_its_association_and_is_replaced(chicago_interfaces, tmp_path):
    _exam, paths = write_series(tmp_path, slices=3, seed=51)
    first, second = (dcmread(p) for p in paths[:2])
    # the pool on for every process (above): the parent's clean-up after the death uses it, and
    # the replacement is forked after that
    with edge_command("dicom_scp", tmp_path, environment={"READROOM_DB_POOL_MAX_SIZE": "16"}) as (
        scp,
        port,
        log,
    ):
        children = child_pids(scp.pid)
        assoc = _scu_association(port)
        assert _stored(assoc, first)
        serving = peer_process(children, port, assoc.dul.socket.socket.getsockname()[1])
        # when the child serving this association is killed (no chance to clean up)
        os.kill(serving, signal.SIGKILL)
        # then the modality's next C-STORE fails: the association is gone, nothing half-stored
        assert not _stored(assoc, second)
        wait_until(lambda: not assoc.is_established, timeout=10, message="the association outlived its child")
        assert not Instance.objects.filter(sop_instance_uid=second.SOPInstanceUID).exists()
        # and its association's row, which no process is left to close, is closed by the parent
        # with the reason (the operations DICOM page no longer shows it open)
        died = DicomAssociation.objects.get(process_id=serving)
        wait_until(
            lambda: DicomAssociation.objects.filter(pk=died.pk, ended_at__isnull=False).exists(),
            timeout=10,
            message="the dead child's association is still open",
        )
        died.refresh_from_db()
        assert (died.end_reason, died.host) == (PROCESS_DIED, socket.gethostname())
        # and the parent replaces the child (logged), which serves the modality's resend: the
        # other, older child is stopped, so only the new one can take the association
        survivor, replacement = sorted(_replaced(scp, serving), key=lambda pid: pid not in children)
        assert survivor in children and replacement not in children
        assert f"(pid {serving}) killed by SIGKILL" in log.read_text()
        with stopped(survivor):
            retry = _scu_association(port)
            assert peer_process([replacement], port, retry.dul.socket.socket.getsockname()[1]) == replacement
            assert _stored(retry, second)
            retry.release()
        assert (
            Instance.objects.filter(
                sop_instance_uid__in=[first.SOPInstanceUID, second.SOPInstanceUID]
            ).count()
            == 2
        )
        # and with both children stopped (as while both are being replaced) the port still takes a
        # connection: it waits in the accept queue and is served once a child runs, never refused
        with stopped(survivor), stopped(replacement):
            sender = subprocess.Popen(
                [
                    "storescu",
                    "-aet",
                    "LAKESHORE_CT1",
                    "-aec",
                    "READROOM",
                    "127.0.0.1",
                    str(port),
                    str(paths[2]),
                ],
                stderr=subprocess.PIPE,
            )
            time.sleep(0.3)  # asserting that nothing happens meanwhile: no condition to wait on
            assert sender.poll() is None
        assert sender.wait(30) == 0, sender.stderr.read()
        assert Instance.objects.count() == 3


def test_at_start_up_this_hosts_associations_left_open_by_a_dead_run_are_closed(chicago_interfaces):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a process id that was this host's and is no more
    host, now = socket.gethostname(), timezone.now()

    def open_row(**fields) -> DicomAssociation:
        return DicomAssociation.objects.create(started_at=now, calling_ae_title="LAKESHORE_CT1", **fields)

    left = open_row(host=host, process_id=dead.pid)
    ours = open_row(host=host, process_id=os.getpid())  # a container's process 1 again
    alive = open_row(host=host, process_id=os.getppid())  # another SCP on this host, still serving
    elsewhere = open_row(host="another-node", process_id=dead.pid)
    stow = open_row(host=host, process_id=dead.pid, kind=DicomAssociation.Kind.STOW)  # the web's
    ended = open_row(host=host, process_id=dead.pid, ended_at=now)
    # when the SCP starts (the first thing `manage.py dicom_scp` does)
    assert dicom_associations_of_previous_run_close() == 2
    # then only the rows of this host's dead SCP processes are closed, with the reason
    closed = {a.pk: a.end_reason for a in DicomAssociation.objects.filter(ended_at__isnull=False)}
    assert closed == {left.pk: PROCESS_DIED, ours.pk: PROCESS_DIED, ended.pk: ""}
    assert {alive.pk, elsewhere.pk, stow.pk} == set(
        DicomAssociation.objects.filter(ended_at__isnull=True).values_list("pk", flat=True)
    )


def test_sigterm_lets_an_open_association_finish_then_every_process_stops(chicago_interfaces, tmp_path):
    _exam, paths = write_series(tmp_path, slices=2, seed=61)
    first, second = (dcmread(p) for p in paths)
    with edge_command("dicom_scp", tmp_path) as (scp, port, log):
        children = child_pids(scp.pid)
        assoc = _scu_association(port)
        assert _stored(assoc, first)
        # when the supervisor is told to stop while a modality is mid-series
        scp.send_signal(signal.SIGTERM)
        wait_until(
            lambda: log.read_text().count("waiting up to") == 2, timeout=10, message="no child stopping"
        )
        # then the open association still stores its next image and releases normally
        assert _stored(assoc, second)
        assoc.release()
        # and then the children and the parent exit cleanly, and nothing listens any more
        assert scp.wait(15) == 0
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
        assert not port_open(port)
        assert "aborted at shutdown" not in log.read_text()
        assert Instance.objects.count() == 2


# --- HL7 -------------------------------------------------------------------------------------------


async def _send(port: int, frames: list[str]) -> list[str]:
    """Frames one after another on one connection, each waiting for its ACK; the MSA-1 codes."""
    reader, writer = await open_hl7_connection("127.0.0.1", port)
    codes = []
    for frame in frames:
        writer.writeblock(frame.encode())
        await writer.drain()
        ack = hl7.parse((await asyncio.wait_for(reader.readblock(), 10)).decode())
        codes.append(str(ack.segment("MSA")[1]))
    writer.close()
    return codes


def _orders(sender, prefix: str, count: int) -> list[str]:
    """Each order created (NW) then changed (XO, a new reason): applied out of order, the XO would
    be overwritten by its NW's reason."""
    frames = []
    for i in range(count):
        keys = {
            "accession": f"{prefix}{i}",
            "placer": f"{prefix}P{i}",
            "filler": f"{prefix}F{i}",
            "sender": sender,
        }
        frames += [
            hl7_data.orm("NW", reason="HEADACHE", **keys),
            hl7_data.orm("XO", reason=f"UPDATED {i}", **keys),
        ]
    return frames


def test_two_listener_processes_ack_apply_and_keep_each_senders_order(
    chicago_interfaces, lakeview_interfaces, tmp_path
):
    with edge_command("hl7_listener", tmp_path) as (listener, port, log):
        # when two senders send at once on their own connections, and a third stream from one
        # sender opens a new connection per message (which may land on either process)
        async def all_senders():
            return await asyncio.gather(
                _send(port, _orders(("EPIC_RAD", "LAKESHORE"), "C", 5)),
                _send(port, _orders(("RIS_LV", "LAKEVIEW"), "L", 5)),
                _one_connection_each(port, _orders(("EPIC_RAD", "LAKESHORE"), "S", 3)),
            )

        codes = asyncio.run(all_senders())
        # then every frame was ACKed AA, and every order is applied with its last change
        assert codes == [["AA"] * 10, ["AA"] * 10, ["AA"] * 6]
        wait_until(
            lambda: not InboundMessage.objects.filter(status=InboundStatus.RECEIVED).exists(), timeout=20
        )
        reasons = dict(Order.objects.values_list("accession_number", "reason"))
        assert reasons == {
            f"{p}{i}": f"UPDATED {i}" for p, n in (("C", 5), ("L", 5), ("S", 3)) for i in range(n)
        }
        # when one child is killed, it is replaced (logged); with the other child stopped, the
        # replacement alone ACKs and applies the next order
        children = child_pids(listener.pid)
        os.kill(children[0], signal.SIGKILL)
        survivor, replacement = sorted(_replaced(listener, children[0]), key=lambda pid: pid not in children)
        assert f"(pid {children[0]}) killed by SIGKILL" in log.read_text()
        with stopped(survivor):
            codes = asyncio.run(_send(port, [hl7_data.orm("NW", accession="K1", placer="KP1", filler="KF1")]))
        assert codes == ["AA"]
        wait_until(lambda: Order.objects.filter(accession_number="K1").exists(), timeout=20)
        assert replacement in child_pids(listener.pid)
        # when Ctrl-C reaches the whole process group (parent and children at once), then all stop
        # and no child that stopped first is "replaced"
        os.killpg(listener.pid, signal.SIGINT)
        assert listener.wait(15) == 0
        assert log.read_text().count("replacing it") == 1, log.read_text()[-3000:]


async def _one_connection_each(port: int, frames: list[str]) -> list[str]:
    codes = []
    for frame in frames:
        codes += await _send(port, [frame])
    return codes


def test_a_child_that_keeps_dying_at_start_is_replaced_ever_later():
    delays = [replacement_delay(n, first=0.5, most=30) for n in range(9)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def _dir(tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"series-{n}"
    path.mkdir()
    return path
