"""bench/ai — how long an AI finding takes to move a study on the readers' screens (issue 18), as
deployed: uvicorn (radiology.asgi) and ``manage.py dicom_scp`` on PostgreSQL + Redis; channels-redis
carries the event from the SCP process, where the triage rules run after the SR's commit, to the
readers' websockets in uvicorn.

The cast is bench/stroke_alert's (``reader_create``, ``session_cookie``, ``Screen``): ``--readers``
eligible neuro readers (licence IL, privileged at the facility, on shift, TOTP verified), each holding
``/ws/worklist/`` open as every page's live channel does; one reader licensed only in WI (must hear
nothing of these studies); operations' socket. The facility has the rule "ICH positive → STAT, first
within STAT".

Each round: a 10-slice routine CT head is C-STOREd by pynetdicom (the modality), completed and routed
(``studies_complete_quiet``, the beat task, in this process) and seen on every reader's list; then the
AI node C-STOREs a TID 1500 SR made with highdicom (``interfaces.simulator.ai_sr_dataset``: ICH
present, p = 0.93) over its own association. Timed, to the ``study.updated`` whose ``because`` is the
AI's, on each eligible reader's socket:

* **C-STORE response → re-ranked event** (the target: p95 < 1 s). The SCP applies the rules after
  the SR's commit and before it answers, so the event may arrive before the response (≤ 0 ms);
* C-STORE request sent → re-ranked event (the whole path, the SR's parse and indexing included).

    PYTHONPATH=$PWD .venv/bin/python bench/ai/run.py [--rounds 20] [--readers 8] [--smoke]

The database is ``$READROOM_BENCH_DB_PREFIX_ai`` (default readroom_bench_ai), dropped and re-created;
Redis is ``REDIS_URL`` (db 9 unless set), flushed."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import shutil
import subprocess
import sys
import tempfile
import time
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
from bench.stroke_alert.run import READER_STEPS, Screen

DATABASE = bench_database("ai")
SLICES = 10
ICH_CODES = ["274100004", "RID4700"]


@dataclasses.dataclass
class Cast:
    readers: list[str]  # session cookie values of the eligible readers
    elsewhere: str  # the reader licensed only in WI
    operations: str


def cast_create(readers: int) -> Cast:
    from django.contrib.auth.models import Group

    from accounts.models import User
    from accounts.roles import Role
    from facilities.models import Facility
    from worklist.models import AiTriageRule

    facility = Facility.objects.get(code="BENCH")
    AiTriageRule.objects.create(
        facility=facility, name="ICH positive → STAT, first", finding_codes=ICH_CODES, raise_to="STAT"
    )
    eligible = [reader_create(f"dr_ai_{n}", state="IL", privileged=True) for n in range(readers)]
    elsewhere = reader_create("dr_wisconsin", state="WI", privileged=False)
    ops = User.objects.create_user(username="ops_bench", display_name="Ops Bench")
    ops.groups.add(Group.objects.get(name=Role.OPERATIONS.value))
    return Cast(
        readers=[session_cookie(user) for user in eligible],
        elsewhere=session_cookie(elsewhere),
        operations=session_cookie(ops),
    )


def head_ct(rng: random.Random):
    """A routine CT head (no stroke in the order or the images): the study the AI re-ranks."""
    from interfaces.simulator import PROCEDURES, exam_random

    exam = exam_random(rng, "BENCH", stroke_rate=0.0, trauma_rate=0.0)
    head = next(p for p in PROCEDURES if p.code == "70450")
    return dataclasses.replace(
        exam, procedure=dataclasses.replace(head, slices=SLICES), priority="R", patient_class="O"
    )


def associated(port: int, calling: str, classes: list[str]):
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    for uid in classes:
        ae.add_requested_context(uid)
    assoc = ae.associate("127.0.0.1", port, ae_title="READROOM")
    if not assoc.is_established:
        raise ConnectionError(f"association from {calling} refused")
    return assoc


def ct_store(exam, port: int) -> list:
    """The modality C-STOREs the series; the datasets (the SR is made about them)."""
    from pynetdicom.sop_class import CTImageStorage

    from interfaces.simulator import series_datasets

    datasets = list(series_datasets(exam, slices=SLICES, size=128))
    assoc = associated(port, "BENCH_CT", [CTImageStorage])
    try:
        for n, ds in enumerate(datasets, 1):
            status = assoc.send_c_store(ds, msg_id=n)
            if getattr(status, "Status", 0xFFFF) != 0:
                raise RuntimeError(f"C-STORE refused: {status}")
    finally:
        assoc.release()
    return datasets


def study_routed(accession: str) -> int:
    """Complete (the quiet period passed, as beat's ``studies_complete_quiet`` sees it) and routed."""
    from datetime import timedelta

    from django.utils import timezone

    from imaging.models import Study
    from imaging.services import studies_complete_quiet

    studies_complete_quiet(now=timezone.now() + timedelta(hours=2))
    study = Study.objects.get(accession_number=accession)
    if not study.worklist_routed:
        raise RuntimeError(f"study {accession} not routed")
    return study.pk


def sr_store(datasets: list, port: int) -> tuple[float, float]:
    """The AI node C-STOREs its SR (ICH present, p = 0.93): when the request went, when the response came."""
    from interfaces.simulator import ai_sr_dataset

    sr = ai_sr_dataset(
        datasets, code="274100004", meaning="Cerebral hemorrhage", present=True, probability=0.93,
        manufacturer="Aidoc", model="BriefCase ICH", version="2.1",
    )  # fmt: skip
    assoc = associated(port, "BENCH_CT", [str(sr.SOPClassUID)])
    try:
        sent = time.perf_counter()
        status = assoc.send_c_store(sr, msg_id=1)
        answered = time.perf_counter()
        if getattr(status, "Status", 0xFFFF) != 0:
            raise RuntimeError(f"SR C-STORE refused: {status}")
    finally:
        assoc.release()
    return sent, answered


def reranked(event: dict) -> bool:
    return event.get("type") == "study.updated" and str(event.get("because", "")).startswith("AI: ")


def routed(event: dict) -> bool:
    return event.get("type") in ("study.added", "study.updated")


def study_reranked(accession: str) -> tuple[str, int]:
    from imaging.models import Study

    study = Study.objects.get(accession_number=accession)
    return study.priority, study.triage_rank


async def rounds(ports: dict, cast: Cast, count: int) -> dict[str, list[float]]:
    from django.conf import settings

    web = f"127.0.0.1:{ports['web']}"

    def cookie(value: str) -> str:
        return f"{settings.SESSION_COOKIE_NAME}={value}"

    readers = [Screen(READER_STEPS) for _ in cast.readers]
    elsewhere, operations = Screen(READER_STEPS), Screen(READER_STEPS)
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
    rng = random.Random(18)
    figures: dict[str, list[float]] = {key: [] for key in LABELS}
    accessions: set[str] = set()
    try:
        for n in range(count + 1):  # round 0 warms up every process
            exam = head_ct(rng)
            accessions.add(exam.accession)
            datasets = await asyncio.to_thread(ct_store, exam, ports["dicom"])
            await asyncio.to_thread(study_routed, exam.accession)
            for screen in readers:  # on every eligible reader's list before the AI speaks
                await screen.event_at(exam.accession, routed)
            sent, answered = await asyncio.to_thread(sr_store, datasets, ports["dicom"])
            arrivals = [await screen.event_at(exam.accession, reranked) for screen in readers]
            ops_at = await operations.event_at(exam.accession, reranked)
            placed = await asyncio.to_thread(study_reranked, exam.accession)
            if placed != ("STAT", 0):
                raise AssertionError(f"{exam.accession} is {placed}, not STAT first within STAT")
            if n:
                figures["response"].extend(at - answered for at in arrivals)
                figures["slowest"].append(max(arrivals) - answered)
                figures["request"].extend(at - sent for at in arrivals)
                figures["ops"].append(ops_at - answered)
                figures["store"].append(answered - sent)
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # anything late for the reader licensed elsewhere would come by now
        heard = elsewhere.about(accessions)
        if heard:
            raise AssertionError(f"the reader licensed only in WI heard {len(heard)} events of these studies")
    finally:
        for listener in listeners:
            listener.cancel()
    return figures


LABELS = {
    "response": "SR C-STORE response → re-ranked, every reader's socket",
    "slowest": "SR C-STORE response → re-ranked, slowest reader",
    "ops": "SR C-STORE response → re-ranked, ops socket",
    "request": "SR C-STORE request → re-ranked, every reader's socket",
    "store": "  of which SR C-STORE request → response",
}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--readers", type=int, default=8, help="eligible readers' sockets")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.readers = 2, 2
    storage = tempfile.mkdtemp(prefix="rr-bench-ai-")
    env = bench_env(DATABASE, READROOM_STORAGE_DIR=storage, ALLOWED_HOSTS="127.0.0.1,localhost,testserver")
    database_migrated(DATABASE, env)
    shell(env, SETUP_FACILITY)
    subprocess.run(["redis-cli", "-n", redis_db(env), "flushdb"], check=True, capture_output=True)
    django_start(env)
    cast = cast_create(args.readers)
    ports = {"web": free_port(), "dicom": free_port()}
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
        "dicom": ["manage.py", "dicom_scp", "--port", str(ports["dicom"])],
    }
    with deployed_processes(commands, env, ports.values(), Path(storage) / "logs"):
        figures = asyncio.run(rounds(ports, cast, args.rounds))
    shutil.rmtree(storage, ignore_errors=True)
    print(
        f"bench/ai: {args.rounds} rounds, {SLICES}-slice CT head then its TID 1500 SR (ICH p=0.93, rule"
        f" → STAT first), {args.readers} eligible readers' sockets + one licensed elsewhere (heard nothing)"
        " + operations (uvicorn + DICOM SCP, PostgreSQL, Redis)"
    )
    for key, label in LABELS.items():
        ms = [v * 1000 for v in figures[key]]
        target = "   (target p95 < 1000 ms)" if key == "response" else ""
        print(
            f"  {label:<56} p50 {percentile(ms, 50):7.1f} ms  p95 {percentile(ms, 95):7.1f} ms"
            f"  max {max(ms):7.1f} ms{target}"
        )
    uptime_print()


if __name__ == "__main__":
    main()
