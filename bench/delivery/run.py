"""bench/delivery — a final signature to the EMR's ACK, through the real outbox and a real Celery
worker (PostgreSQL, Redis): the signing transaction queues the ORU^R01 (reports.delivery), the
commit enqueues the facility's outbox task, a 2-process worker sends it over MLLP to a fake EMR (a
real MLLP server in this process, answering AA) and records the ACK as the study's "delivered"
milestone. Each round: a head CT is routed, claimed, written on a facility template and signed
(password re-authentication, as a reader signs); then the bench waits for the EMR and the milestone.

    PYTHONPATH=$PWD .venv/bin/python bench/delivery/run.py [--rounds 20] [--smoke]   (or: make bench-delivery)

Times, from the moment report_sign returns (the signature committed): the EMR has the ORU and has
answered; the worker has recorded the ACK (the milestone the TAT reports use). No peer: nothing
runs interleaved. Target (bench/README): p95 < 2 s."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
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
    percentile,
    redis_db,
    shell,
    uptime_print,
    verified_credentials,
)

PASSWORD = "bench-signing-password-42"
TEMPLATE = {
    "sections": [
        {
            "key": "findings",
            "title": "Findings",
            "fields": [
                {"key": "findings", "label": "Findings", "kind": "text", "default": "No mass effect."}
            ],
        },
        {
            "key": "impression",
            "title": "Impression",
            "fields": [{"key": "impression", "label": "Impression", "kind": "text", "required": True}],
        },
    ]
}


def setup(emr_port: int):
    """The bench facility sending its ORUs to the fake EMR, a CT head template, an eligible reader."""
    from django.contrib.auth.models import Group
    from django.utils import timezone

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
    from reports.models import ReportTemplate, TemplateVersion
    from worklist.models import Shift

    facility = Facility.objects.get(code="BENCH")
    facility.hl7_outbound_host, facility.hl7_outbound_port = "127.0.0.1", emr_port
    facility.save()
    template = ReportTemplate.objects.create(facility=facility, name="CT head", procedure_codes=["70450"])
    TemplateVersion.objects.create(template=template, number=1, content=TEMPLATE)
    user = User.objects.create_user(username="dr_delivery", display_name="Dr Delivery", password=PASSWORD)
    user.groups.add(Group.objects.get(name=Role.RADIOLOGIST.value))
    profile = RadiologistProfile.objects.create(user=user)
    profile.subspecialties.set(Subspecialty.objects.filter(code=Subspecialty.NEURO))
    today = date.today()
    licence = StateLicence.objects.create(
        profile=profile,
        state="IL",
        number="IL-036-424242",
        status=LicenceStatus.ACTIVE,
        issued_on=date(2019, 1, 1),
        expires_on=today + timedelta(days=365),
    )
    verified_credentials(profile, licence)
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
    return facility, user


def read_and_sign(facility, user, n: int) -> tuple[int, float]:
    """A head CT routed, claimed, written and signed final; (study id, when the signature committed)."""
    from django.utils import timezone

    from bench.common import head_ct_claimed
    from reports.services import report_draft_save, report_sign, report_start

    study_pk = head_ct_claimed(facility, user, f"DLV{n}", f"1.2.826.0.1.3680043.10.917.{n}")
    report = report_start(study_id=study_pk, user=user, at=timezone.now())
    values = {"impression": "No acute intracranial abnormality."}
    report_draft_save(report_id=report.pk, user=user, values=values, at=timezone.now())
    report_sign(report_id=report.pk, user=user, secret=PASSWORD, at=timezone.now(), final=True)
    return study_pk, time.time()


def delivered_at(study_id: int, timeout: float = 60) -> float:
    from django.db import connection

    from worklist.models import StudyTurnaround

    deadline = time.monotonic() + timeout
    while True:
        at = StudyTurnaround.objects.filter(study_id=study_id).values_list("delivered_at", flat=True).first()
        if at is not None:
            return at.timestamp()
        if time.monotonic() > deadline:
            raise TimeoutError(f"study {study_id}: no EMR ACK recorded within {timeout} s")
        connection.close()  # see the worker's commit, not this session's snapshot
        time.sleep(0.01)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.smoke:
        args.rounds = 2
    from tests.interfaces.fake_emr import FakeEmr
    from tests.net import free_port

    database = bench_database("delivery")
    storage = tempfile.mkdtemp(prefix="rr-bench-delivery-")
    env = bench_env(database, READROOM_STORAGE_DIR=storage, READROOM_HL7_OUT_RETRY_JITTER="false")
    database_migrated(database, env)
    shell(env, SETUP_FACILITY)
    subprocess.run(["redis-cli", "-n", redis_db(env), "flushdb"], check=True, capture_output=True)
    os.environ.update(env)
    import django

    django.setup()
    answered: dict[str, float] = {}

    def answer(control_id: str, seen: int) -> str:
        answered.setdefault(control_id, time.time())
        return "AA"

    emr = FakeEmr(answer, port=free_port()).start()
    facility, user = setup(emr.port)
    log = Path(storage) / "worker.log"
    with log.open("wb") as errors:
        worker = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "radiology", "worker", "-c", "2", "--loglevel", "WARNING"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    emr_lags, ack_lags = [], []
    try:
        for n in range(args.rounds + 1):  # round 0 warms the worker up
            seen = len(emr.received)
            study_id, signed = read_and_sign(facility, user, n)
            acked = delivered_at(study_id)
            control_id = emr.received[seen] if len(emr.received) > seen else None
            if n:
                ack_lags.append((acked - signed) * 1000)
                if control_id in answered:
                    emr_lags.append((answered[control_id] - signed) * 1000)
            time.sleep(0.2)
    except Exception:
        print(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        worker.terminate()
        worker.wait(30)
        emr.stop()
    print(
        f"bench/delivery: {args.rounds} final reads signed, ORU^R01 through the outbox and a 2-process Celery"
        " worker to a fake EMR over MLLP (PostgreSQL, Redis)"
    )
    for label, ms in (
        ("signed → EMR has the ORU (answers AA)", emr_lags),
        ("signed → ACK recorded (delivered)", ack_lags),
    ):
        if ms:
            print(
                f"  {label:<40} p50 {percentile(ms, 50):7.1f} ms  p95 {percentile(ms, 95):7.1f} ms"
                f"  max {max(ms):7.1f} ms   (target p95 < 2000 ms)"
            )
    uptime_print()


if __name__ == "__main__":
    main()
