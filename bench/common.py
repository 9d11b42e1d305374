"""Shared set-up for benchmarks: a dedicated PostgreSQL database, migrated, with one facility whose
HL7 sender and DICOM AE title are registered; processes started the way deploy/ starts them."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# Several people (or CI jobs) may run benchmarks on one PostgreSQL/Redis: READROOM_BENCH_DB_PREFIX and
# REDIS_URL keep each run's database and broker apart (each bench drops and recreates its database).
DB_PREFIX = os.environ.get("READROOM_BENCH_DB_PREFIX", "readroom_bench")


def bench_database(kind: str) -> str:
    return f"{DB_PREFIX}_{kind}"


def redis_db(env: dict[str, str]) -> str:
    return env["REDIS_URL"].rsplit("/", 1)[1] or "0"


def bench_env(database: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
    env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{database}"
    env["DJANGO_SETTINGS_MODULE"] = "radiology.settings.base"
    env.setdefault("READROOM_DATA_DIR", f"/tmp/readroom-bench-{database}")
    # A queue of this run's own: a worker left behind by another run (or another install on the
    # same Redis) would take this run's tasks and apply them to its own database.
    env["READROOM_CELERY_QUEUE"] = f"bench-{database}-{os.getpid()}"
    env.update(extra)
    return env


def database_fresh(name: str) -> None:
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


def database_copy(template: str, name: str) -> None:
    """A fresh database as a copy of a migrated one (seconds, where migrating is a minute)."""
    for sql in (
        f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
        f"CREATE DATABASE {name} TEMPLATE {template}",
    ):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


def database_migrated(name: str, env: dict[str, str]) -> None:
    """``name`` dropped and made anew, migrated: a copy of ``$READROOM_BENCH_TEMPLATE`` (a migrated
    database, e.g. the smoke tests' one) when that is set, else by running the migrations."""
    template = os.environ.get("READROOM_BENCH_TEMPLATE")
    if template:
        database_copy(template, name)
        return
    database_fresh(name)
    manage(env, "migrate", "-v0")


def manage(env: dict, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, **kwargs)


def shell(env: dict, code: str) -> str:
    return manage(env, "shell", "-c", code, capture_output=True, text=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 90) -> None:
    # Generous: a loaded 2-core CI machine starts Django + uvicorn slowly; a bench that never
    # started is still caught, only later.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


SETUP_FACILITY = """
from facilities.models import Facility, Hl7Sender, DicomSender
f, _ = Facility.objects.get_or_create(code="BENCH", defaults=dict(name="Bench Hospital", state="IL",
    timezone="America/Chicago", kind="community", study_quiet_seconds=3600))
Hl7Sender.objects.get_or_create(facility=f, sending_application="BENCH_RIS", sending_facility="BENCH")
DicomSender.objects.get_or_create(facility=f, ae_title="BENCH_CT")
"""


@contextlib.contextmanager
def deployed_processes(
    commands: dict[str, list[str]],
    env: dict,
    ports: Iterable[int],
    logs: Path,
    batch: Iterable[str] = (),
) -> Iterator[dict[str, subprocess.Popen]]:
    """The deployed processes (``commands``: name → arguments to Python, run from the repository),
    up once every port listens, given by name (a bench reads one's CPU); each one's stderr in
    ``logs``/name, its tail printed if the body fails; terminated afterwards (killed if one hangs on
    a socket a dead client left open, or a worker's warm shutdown waits on a task). ``batch``: names
    run under SCHED_BATCH (their children inherit it), as a unit's ``CPUSchedulingPolicy=batch``."""
    logs.mkdir(parents=True, exist_ok=True)
    batch = set(batch)
    with contextlib.ExitStack() as files:
        processes = [
            subprocess.Popen(
                [PYTHON, *command],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=files.enter_context((logs / name).open("wb")),
                preexec_fn=_sched_batch if name in batch else None,
            )
            for name, command in commands.items()
        ]
        try:
            for port in ports:
                wait_for_port(port)
            yield dict(zip(commands, processes, strict=True))
        except Exception:
            for name in commands:
                print(f"--- {name} stderr (tail)\n" + (logs / name).read_text(errors="replace")[-3000:])
            raise
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:  # uvicorn waits for sockets a dead client left open
                    process.kill()
                    process.wait(10)


def _sched_batch() -> None:
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux /proc). On a busy machine the wall
    clock varies from run to run; the CPU a process spends per message or instance does not."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its direct children (a supervisor's workers: ``uvicorn --workers``,
    ``dicom_scp --processes``)."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    total += cpu_seconds(int(entry.name))
    return total


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def row_count(env: dict, table: str, where: str = "") -> int:
    """Rows in ``table`` of the bench's database (``where``: an SQL condition on them), by psql (a
    Django shell per poll costs seconds)."""
    database = env["DATABASE_URL"].rsplit("/", 1)[1]
    out = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-tAc",
            f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else ""),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip())


# --- what every bench prints and how it compares -------------------------------------------------


def load_average() -> str:
    """The machine's load (``uptime``'s three figures), printed with every bench's figures: on a
    shared machine a figure means little without the load it was taken under."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_reference_ms() -> float:
    """CPU milliseconds of a fixed piece of pure Python: on a shared machine a process's CPU time
    per request stretches too (other processes on the sibling hyperthread, cache), so CPU figures
    are printed with this yardstick beside them."""
    started = time.process_time()
    sum(i * i for i in range(1_000_000))
    return (time.process_time() - started) * 1000


def uptime_print(when: str = "") -> None:
    print(
        f"  load average {load_average()}{f' ({when})' if when else ''}; CPU yardstick {cpu_reference_ms():.0f} ms",
        flush=True,
    )


def interleaved(runs: dict[str, Callable[[], dict]], rounds: int, first: int = 1) -> dict[str, list[dict]]:
    """Run each side once per round, in turn (A B A B …), so a change of the machine's load during
    the bench falls on both sides rather than flattering one. Each run returns its figures.
    ``first``: the number printed for the first round (a bench that deploys afresh per round)."""
    results: dict[str, list[dict]] = {name: [] for name in runs}
    for round_ in range(rounds):
        for name, run in runs.items():
            figures = run()
            figures["load"] = load_average()
            results[name].append(figures)
            print(f"  round {round_ + first} {name:<10} " + _figures_line(figures), flush=True)
    return results


def _figures_line(figures: dict) -> str:
    return "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """Every bench's command line starts with ``--smoke``: a size that runs in seconds, which a test
    runs in CI (tests/test_benchmarks.py) so a bench cannot rot unnoticed; its figures mean nothing."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds' run that only proves the bench works"
    )
    return parser


# --- Orthanc, the peer (Debian's orthanc + orthanc-dicomweb) ----------------------------------------

ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@contextlib.contextmanager
def orthanc_running(work: Path, *, dicomweb: bool = False, **config: object) -> Iterator[dict]:
    """An Orthanc on loopback free ports, its index in ``work``: ``{"http", "dicom_port",
    "dicomweb", "process"}`` (``dicomweb``: the plugin's root, ``…/dicom-web``; ``process``: for a
    test that stops it, SIGSTOP, as a PACS that hangs). Extra ``config`` keys go into its
    configuration as given. With ``dicomweb`` the plugin must load (Debian's orthanc-dicomweb), or
    this raises: a DICOMweb comparison or source without it would test nothing. The one way the
    benches and tests start Orthanc."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    dicom_port, http_port = free_port(), free_port()
    settings = {
        "Name": "peer",
        "StorageDirectory": str(work / "orthanc"),
        "IndexDirectory": str(work / "orthanc"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)] if dicomweb else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        **config,
    }
    (work / "orthanc.json").write_text(json.dumps(settings))
    process = subprocess.Popen(
        [binary, str(work / "orthanc.json")],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(http_port, timeout=30)
        wait_for_port(dicom_port, timeout=30)
        http = f"http://127.0.0.1:{http_port}"
        if dicomweb:
            _orthanc_plugin_check(http, settings, "dicom-web")
        yield {"http": http, "dicom_port": dicom_port, "dicomweb": f"{http}/dicom-web", "process": process}
    finally:
        # Killed, not stopped: its index and storage are the caller's scratch directory, never read
        # again, and Orthanc 1.10's graceful stop takes 3.5 s whatever it did (its DICOM and HTTP
        # servers wind down on poll timeouts) — ~40 s of the suite, one per priors/QIDO test.
        # SIGKILL also ends a process a test left stopped (SIGSTOP, the PACS that hangs).
        process.kill()
        process.wait(20)


def _orthanc_plugin_check(http: str, settings: dict, plugin: str) -> None:
    request = urllib.request.Request(f"{http}/plugins")
    users = settings.get("RegisteredUsers") if settings.get("AuthenticationEnabled") else None
    if users:
        user, password = next(iter(users.items()))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        loaded = json.load(response)
    if plugin not in loaded:
        raise RuntimeError(f"Orthanc did not load its {plugin} plugin (apt-get install orthanc-dicomweb)")


def orthanc_store(orthanc: dict, part10: bytes, *, auth: tuple[str, str] | None = None) -> None:
    """One Part 10 file into Orthanc over its REST API (``auth``: user and password, when it asks)."""
    request = urllib.request.Request(f"{orthanc['http']}/instances", data=part10, method="POST")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200, response.status


def head_ct_claimed(facility, reader, tag: str, study_uid: str) -> int:
    """A complete head CT with its order, routed and claimed by ``reader``: the study a bench's
    reader is in the middle of (stroke_alert's editor, delivery's signature). Needs Django set up."""
    from django.utils import timezone

    from imaging.models import Order, Patient, Study, StudyStatus
    from worklist.services import study_claim, study_route

    patient = Patient.objects.create(facility=facility, mrn=tag, assigning_authority="BENCH", sex="F")
    order = Order.objects.create(
        facility=facility,
        patient=patient,
        accession_number=tag,
        procedure_code="70450",
        procedure_text="CT HEAD W/O CONTRAST",
    )
    now = timezone.now()
    study = Study.objects.create(
        facility=facility,
        order=order,
        patient=patient,
        study_instance_uid=study_uid,
        accession_number=tag,
        modalities="CT",
        status=StudyStatus.COMPLETE,
        first_received_at=now,
        last_received_at=now,
        completed_at=now,
    )
    study_route(study_id=study.pk)
    study_claim(study_id=study.pk, user=reader, at=timezone.now())
    return study.pk


def verified_credentials(profile, licence) -> None:
    """Record the bench reader's licence as verified and give them a verified malpractice cover:
    facilities require both before a reader is eligible (``Facility.reads_before_verification``
    off by default). Needs Django set up."""
    from datetime import UTC, datetime

    from credentialing.models import MalpracticeCoverage, VerificationMethod

    verified = {
        "verified_at": datetime(2024, 1, 5, tzinfo=UTC),
        "verification_method": VerificationMethod.FSMB,
    }
    for name, value in verified.items():
        setattr(licence, name, value)
    licence.save(update_fields=list(verified))
    MalpracticeCoverage.objects.create(**malpractice_cover(profile), **verified)


def malpractice_cover(profile) -> dict:
    """The fields of a cover in force from 2020 to 2035 (bulk benches build the rows themselves)."""
    from datetime import date

    return {
        "profile": profile,
        "carrier": "Bench Mutual",
        "policy_number": f"BM-{profile.pk}",
        "per_claim_limit": 1_000_000,
        "aggregate_limit": 3_000_000,
        "effective_on": date(2020, 1, 1),
        "expires_on": date(2035, 12, 31),
    }


# --- Django-side helpers shared by the benches that drive pages and sockets (stroke_alert, ai, viewer)


def django_start(env: dict) -> None:
    os.environ.update(env)
    import django

    django.setup()


def session_cookie(user) -> str:
    """A signed-in session for ``user``, verified with their TOTP device (as after the login's code)."""
    from django.conf import settings
    from django.test import Client
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def reader_create(username: str, *, state: str, privileged: bool):
    """A neuro reader on shift now, licensed in ``state``; privileged at the bench facility or not."""
    from datetime import date, timedelta

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
    from worklist.models import Shift

    user = User.objects.create_user(username=username, display_name=username.replace("_", " ").title())
    user.groups.add(Group.objects.get(name=Role.RADIOLOGIST.value))
    profile = RadiologistProfile.objects.create(user=user)
    profile.subspecialties.set(Subspecialty.objects.filter(code=Subspecialty.NEURO))
    today = date.today()
    licence = StateLicence.objects.create(
        profile=profile,
        state=state,
        number=f"{state}-036-{user.pk:06d}",
        status=LicenceStatus.ACTIVE,
        issued_on=date(2019, 1, 1),
        expires_on=today + timedelta(days=365),
    )
    verified_credentials(profile, licence)
    if privileged:
        FacilityPrivilege.objects.create(
            profile=profile,
            facility=Facility.objects.get(code="BENCH"),
            status=PrivilegeStatus.APPROVED,
            applied_on=date(2024, 1, 2),
            granted_on=date(2024, 2, 1),
            expires_on=today + timedelta(days=365),
        )
    now = timezone.now()
    Shift.objects.create(
        radiologist=user, starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=8)
    )
    return user
