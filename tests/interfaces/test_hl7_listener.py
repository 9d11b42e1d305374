"""The MLLP listener over real sockets with python-hl7's client: persistent connections, every ACK
path of STANDARDS.md §1, malformed input answered and survived, nothing received lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import hl7
import pytest
from django.db import connection
from hl7.mllp import open_hl7_connection

from imaging.models import Order, OrderStatus, Patient, Study
from interfaces.models import InboundMessage, InboundStatus
from tests import hl7_data
from tests.interfaces.conftest import applied
from tests.net import free_port, port_open, wait_until

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def exchange(address, *frames: bytes | str, timeout: float = 10) -> list[hl7.Message | None]:
    """Send frames one after another on ONE connection, as an interface engine does; the ACKs."""

    async def run():
        reader, writer = await open_hl7_connection(*address)
        acks = []
        for frame in frames:
            writer.writeblock(frame.encode() if isinstance(frame, str) else frame)
            await writer.drain()
            try:
                block = await asyncio.wait_for(reader.readblock(), timeout)
                acks.append(hl7.parse(block.decode()))
            except TimeoutError:
                acks.append(None)
        writer.close()
        return acks

    acks = asyncio.run(run())
    applied()
    return acks


def msa(ack: hl7.Message) -> tuple[str, str]:
    return str(ack.extract_field("MSA", 1, 1)), str(ack.extract_field("MSA", 1, 2))


def err_code(ack: hl7.Message) -> str:
    """The table 0357 code: ERR-3.1 from v2.5, ERR-1.4.1 (ELD) before."""
    return str(ack.extract_field("ERR", 1, 3, 1, 1)) or str(ack.extract_field("ERR", 1, 1, 1, 4, 1))


def test_new_order_is_acked_stored_and_applied(hl7_listener):
    # given an IHE RAD-4 ORM^O01 (v2.3.1) for a code-stroke head CT
    message = hl7_data.orm(control_id="CTRL-1", reason="CODE STROKE, LEFT SIDED WEAKNESS")
    # when the RIS sends it
    (ack,) = exchange(hl7_listener, message)
    # then it is accepted with MSA-2 echoing MSH-10, in the sender's version
    assert msa(ack) == ("AA", "CTRL-1")
    assert str(ack.extract_field("MSH", 1, 12)) == "2.3.1"
    assert str(ack.extract_field("MSH", 1, 9, 1, 1)) == "ACK"
    # and the raw frame is kept, applied once
    stored = InboundMessage.objects.get(control_id="CTRL-1")
    assert bytes(stored.raw) == message.encode()
    assert stored.status == InboundStatus.PROCESSED
    order = Order.objects.get(accession_number="A1001")
    assert (order.procedure_code, order.priority, order.status) == ("70450", "STROKE", OrderStatus.SCHEDULED)
    assert order.patient.mrn == "MRN1001" and order.patient.family_name == "QUINLAN"
    assert order.ordering_provider_name == "DR MARCUS WELBY"


def test_each_order_control_on_one_persistent_connection(hl7_listener):
    nw = hl7_data.orm("NW", accession="A2001", priority="R", reason="FOLLOW-UP")
    xo = hl7_data.orm("XO", accession="A2001", priority="S", reason="WORSENING HEADACHE", text="CT HEAD W/O")
    second = hl7_data.orm("NW", accession="A2002", placer="P2002", filler="F2002", priority="R")
    dc = hl7_data.orm("DC", accession="A2002", placer="P2002", filler="F2002")
    acks = exchange(hl7_listener, nw, xo, second, dc)
    assert [msa(a)[0] for a in acks] == ["AA", "AA", "AA", "AA"]
    changed = Order.objects.get(accession_number="A2001")
    assert (changed.priority, changed.reason, changed.procedure_text) == (
        "STAT",
        "WORSENING HEADACHE",
        "CT HEAD W/O",
    )
    assert Order.objects.get(accession_number="A2002").status == OrderStatus.DISCONTINUED


def test_cancel_removes_the_study_from_reading(hl7_listener, chicago):
    exchange(hl7_listener, hl7_data.orm("NW", accession="A3001"))
    order = Order.objects.get(accession_number="A3001")
    study = Study.objects.create(
        facility=chicago,
        study_instance_uid="1.2.3.3001",
        accession_number="A3001",
        order=order,
        patient=order.patient,
    )
    (ack,) = exchange(hl7_listener, hl7_data.orm("CA", accession="A3001"))
    assert msa(ack)[0] == "AA"
    order.refresh_from_db()
    study.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED and order.cancelled_at is not None
    assert study.status == "cancelled"


def test_cancel_after_the_final_read_leaves_the_read_study_alone(hl7_listener, chicago):
    # given a study of order A3002 already read (final)
    exchange(hl7_listener, hl7_data.orm("NW", accession="A3002"))
    order = Order.objects.get(accession_number="A3002")
    study = Study.objects.create(
        facility=chicago,
        study_instance_uid="1.2.3.3002",
        accession_number="A3002",
        order=order,
        patient=order.patient,
        status="final",
    )
    # when the RIS cancels the order
    (ack,) = exchange(hl7_listener, hl7_data.orm("CA", accession="A3002"))
    # then the order is cancelled, the read study stays read (a signed, billed report is legal record)
    assert msa(ack)[0] == "AA"
    order.refresh_from_db()
    study.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED and study.status == "final"


def test_omi_o23_reads_ipc_and_tq1(hl7_listener):
    (ack,) = exchange(
        hl7_listener,
        hl7_data.omi(accession="A4001", study_uid="1.2.826.0.1.3680043.8.498.4001", priority="S"),
    )
    assert msa(ack)[0] == "AA"
    order = Order.objects.get(accession_number="A4001")
    assert order.priority == "STAT"
    assert order.reason == "ACUTE NEURO DEFICIT"


def test_images_before_order_are_matched_when_it_comes(hl7_listener, chicago):
    # given a study that arrived with accession A5001 and the modality's patient id only
    study = Study.objects.create(facility=chicago, study_instance_uid="1.2.3.5001", accession_number="A5001")
    # when its order arrives
    exchange(hl7_listener, hl7_data.orm(accession="A5001", reason="CODE STROKE"))
    # then the study is linked to it, with the order's patient and priority
    study.refresh_from_db()
    assert study.order.accession_number == "A5001"
    assert study.patient.mrn == "MRN1001"
    assert (study.priority, study.is_stroke) == ("STROKE", True)


def test_resent_message_is_kept_but_applied_once(hl7_listener):
    message = hl7_data.orm(control_id="DUP-1", accession="A6001")
    first, again = exchange(hl7_listener, message, message)
    assert msa(first) == msa(again) == ("AA", "DUP-1")
    rows = InboundMessage.objects.filter(control_id="DUP-1").order_by("id")
    assert [r.status for r in rows] == [InboundStatus.PROCESSED, InboundStatus.DUPLICATE]
    assert rows[1].duplicate_of_id == rows[0].pk
    assert Order.objects.filter(accession_number="A6001").count() == 1


def test_demographics_update_and_merge(hl7_listener, chicago):
    exchange(hl7_listener, hl7_data.orm(accession="A7001", mrn="MRN1001"))
    exchange(hl7_listener, hl7_data.orm(accession="A7002", placer="P7002", filler="F7002", mrn="MRN0999"))
    # when the name and birth date are corrected, then the two records are merged
    (a08,) = exchange(hl7_listener, hl7_data.adt_a08(mrn="MRN1001", family="QUINLAN-SMITH", dob="19580215"))
    assert msa(a08)[0] == "AA"
    jane = Patient.objects.get(mrn="MRN1001")
    assert (jane.family_name, str(jane.birth_date)) == ("QUINLAN-SMITH", "1958-02-15")
    (a40,) = exchange(hl7_listener, hl7_data.adt_a40(surviving="MRN1001", prior="MRN0999"))
    assert msa(a40)[0] == "AA"
    prior = Patient.objects.get(mrn="MRN0999")
    assert prior.merged_into == jane
    assert Order.objects.get(accession_number="A7002").patient == jane
    # the merge is in the audit log: the prior record now points at the survivor
    from auditlog.models import LogEntry

    assert LogEntry.objects.get_for_object(prior).filter(changes__icontains="merged_into").exists()


@pytest.mark.parametrize(
    ("frame", "code", "err"),
    [
        (hl7_data.orm().replace("PID|1||MRN1001^^^LAKESHORE^MR", "PID|1||"), "AE", "101"),  # no MRN
        (hl7_data.orm().replace("ORC|NW", "ORC|ZZ"), "AE", "103"),  # bad order control
        (hl7_data.orm().replace("|70450^CT HEAD W/O CONTRAST^C4|", "||"), "AE", "101"),  # no OBR-4
        (hl7_data.orm().replace("ORM^O01", "ORU^R01"), "AR", "200"),  # unsupported message type
        (hl7_data.adt_a08().replace("ADT^A08^ADT_A01", "ADT^A01^ADT_A01"), "AR", "201"),  # unsupported event
        (hl7_data.orm().replace("|P|2.3.1", "|T|2.3.1"), "AR", "202"),  # training processing id
        (hl7_data.orm(version="2.1"), "AR", "203"),  # unsupported version
        (hl7_data.orm(sender=("UNKNOWN_RIS", "ELSEWHERE")), "AR", "204"),  # sender not onboarded
        (
            hl7_data.orm().replace(
                "^^^20261128031500^^S||20261128031000", "^^^20261128031500^^S||2026-11-28"
            ),
            "AE",
            "102",
        ),  # bad date
    ],
)
def test_errors_get_the_right_nak_and_are_kept(hl7_listener, frame, code, err):
    (ack,) = exchange(hl7_listener, frame)
    assert msa(ack)[0] == code
    assert err_code(ack) == err
    kept = InboundMessage.objects.get()
    assert kept.status == InboundStatus.REJECTED and kept.error_code == err
    assert bytes(kept.raw) == frame.encode()
    assert not Order.objects.exists()


def test_v23_ack_uses_err_1(hl7_listener):
    frame = hl7_data.orm(version="2.3").replace("ORC|NW", "ORC|ZZ")
    (ack,) = exchange(hl7_listener, frame)
    assert msa(ack)[0] == "AE"
    assert str(ack.extract_field("ERR", 1, 1, 1, 4)) == "103"  # ERR-1.4.1 code (ELD)


def test_malformed_frames_are_answered_and_the_connection_goes_on(hl7_listener):
    good = hl7_data.orm(control_id="AFTER-GARBAGE", accession="A8001")
    frames = [
        b"\x00\xff\x13random bytes\x80",  # random bytes
        b"PID|1||nothing before me",  # no MSH
        b"MSH|^~\\&|EPIC_RAD|LAKESHORE",  # truncated MSH
        b"MSH^~|&|EPIC_RAD|LAKESHORE|R|R|2026||ORM^O01|1|P|2.5.1",  # wrong separators
        good,
    ]
    acks = exchange(hl7_listener, *frames)
    assert [msa(a)[0] for a in acks] == ["AR", "AR", "AR", "AR", "AA"]
    assert msa(acks[-1])[1] == "AFTER-GARBAGE"
    assert InboundMessage.objects.filter(status=InboundStatus.REJECTED).count() == 4
    assert Order.objects.filter(accession_number="A8001").exists()


def test_oversize_frame_is_rejected_and_the_next_frame_served(hl7_listener):
    big = hl7_data.orm(control_id="BIG-1").encode() + b"NTE|1||" + b"X" * (10 * 1024 * 1024) + b"\r"
    follow_up = hl7_data.orm(control_id="AFTER-BIG", accession="A9001")
    big_ack, next_ack = exchange(hl7_listener, big, follow_up, timeout=30)
    assert msa(big_ack) == ("AR", "BIG-1")
    assert msa(next_ack) == ("AA", "AFTER-BIG")
    kept = InboundMessage.objects.get(control_id="BIG-1")
    assert kept.size_bytes == len(big) and kept.status == InboundStatus.REJECTED


def test_line_endings_and_charset(hl7_listener):
    # LF line endings and a Latin-1 name declared in MSH-18
    frame = hl7_data.orm(accession="A9101", charset="8859/1").replace("\r", "\n").replace("QUINLAN", "MÜLLER")
    (ack,) = exchange(hl7_listener, frame.encode("latin-1"))
    assert msa(ack)[0] == "AA"
    assert Order.objects.get(accession_number="A9101").patient.family_name == "MÜLLER"


def test_enhanced_mode_commit_acks(hl7_listener):
    ok = hl7_data.orm(accept_ack="AL", app_ack="NE", control_id="ENH-1", accession="A9201")
    bad = hl7_data.orm(accept_ack="AL", app_ack="NE", control_id="ENH-2").replace("ORC|NW", "ORC|ZZ")
    quiet = hl7_data.orm(accept_ack="ER", app_ack="NE", control_id="ENH-3", accession="A9203")
    acks = exchange(hl7_listener, ok, bad, quiet, timeout=1.5)
    assert msa(acks[0]) == ("CA", "ENH-1")
    assert msa(acks[1]) == ("CE", "ENH-2")
    assert acks[2] is None  # ER: acknowledge errors only; this one was fine
    assert Order.objects.filter(accession_number="A9203").exists()


def test_several_senders_at_once(hl7_listener, lakeview_interfaces):
    async def sender(app_fac, prefix):
        reader, writer = await open_hl7_connection(*hl7_listener)
        codes = []
        for i in range(5):
            writer.writeblock(
                hl7_data.orm(
                    accession=f"{prefix}{i}", placer=f"{prefix}P{i}", filler=f"{prefix}F{i}", sender=app_fac
                ).encode()
            )
            await writer.drain()
            codes.append(msa(hl7.parse((await reader.readblock()).decode()))[0])
        writer.close()
        return codes

    async def both():
        return await asyncio.gather(
            sender(("EPIC_RAD", "LAKESHORE"), "C"), sender(("RIS_LV", "LAKEVIEW"), "L")
        )

    chicago_codes, lakeview_codes = asyncio.run(both())
    applied()
    assert chicago_codes == lakeview_codes == ["AA"] * 5
    assert Order.objects.filter(facility__code="WI-LAKEVIEW").count() == 5
    assert Order.objects.filter(facility__code="CHI-L1").count() == 5


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the listener process needs a database another process can reach (CI: PostgreSQL)",
)
def test_the_listener_command_stores_in_its_own_loop_and_survives_a_lost_database_session(
    chicago_interfaces, settings, tmp_path
):
    # given `manage.py hl7_listener` as deployed: its own process, storing in its event loop
    db = settings.DATABASES["default"]
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "radiology.settings.base",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        "CELERY_TASK_ALWAYS_EAGER": "true",  # applied in the process too: no worker needed here
        "READROOM_HL7_PORT": str(port),
    }
    listener = subprocess.Popen(
        [sys.executable, "manage.py", "hl7_listener", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stderr=(tmp_path / "listener.log").open("wb"),
        start_new_session=True,
    )
    try:
        _wait_for_port(port, listener, tmp_path / "listener.log")
        address = ("127.0.0.1", port)
        # when orders, a resend and garbage arrive on one connection
        first = hl7_data.orm(control_id="PROC-1", accession="A9101")
        acks = exchange(
            address, first, first, b"\x00garbage", hl7_data.orm(control_id="PROC-2", accession="A9102")
        )
        # then each is answered by the standard, stored once, and applied
        assert [msa(a) for a in acks] == [("AA", "PROC-1"), ("AA", "PROC-1"), ("AR", ""), ("AA", "PROC-2")]
        assert InboundMessage.objects.filter(control_id="PROC-1").count() == 2  # the resend is kept
        wait_until(lambda: Order.objects.filter(accession_number__in=["A9101", "A9102"]).count() == 2)
        # when its database session is killed under it
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            pids = [pid for (pid,) in cursor.fetchall()]
            cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", [pids])
        wait_until(lambda: not _backends_alive(pids))
        # then the next frame is refused with AE 207 — never an ACK for what was not stored — and
        # the engine's resend is accepted on a new session, stored and applied
        retry = hl7_data.orm(control_id="PROC-3", accession="A9103")
        (refused,) = exchange(address, retry)
        assert msa(refused) == ("AE", "PROC-3") and err_code(refused) == "207"
        # matched by the engine: MSA-2 echoes MSH-10, MSH-5/6 name the sender (issue #15 item 5)
        assert [str(refused.extract_field("MSH", 1, n)) for n in (5, 6)] == ["EPIC_RAD", "LAKESHORE"]
        (accepted,) = exchange(address, retry)
        assert msa(accepted) == ("AA", "PROC-3")
        assert Order.objects.filter(accession_number="A9103").exists()
        assert listener.poll() is None  # still serving
    finally:
        os.killpg(listener.pid, signal.SIGTERM)
        listener.wait(10)
        print((tmp_path / "listener.log").read_text()[-30000:])  # shown when the test fails


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    def listening() -> bool:
        assert process.poll() is None, log.read_text()[-2000:]
        return port_open(port)

    wait_until(listening, timeout=30, message=f"nothing listening on {port}")


def _backends_alive(pids: list[int]) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids])
        return cursor.fetchone()[0] > 0
