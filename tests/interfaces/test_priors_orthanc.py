"""Priors from the hospital's PACS: a real Orthanc (Debian's package) on loopback free ports holds a
patient's three prior CTs (two chest, one head) and a namesake's chest CT. A new order for a chest CT
makes ReadRoom fetch the two relevant priors — by C-MOVE into its own SCP, and by C-GET — never the
namesake's; they are that patient's priors (never a worklist study), shown to the facility and to no
other. A source that is down, refuses the association, or stops answering mid-move (the Orthanc process
stopped with SIGSTOP) is retried and the failure is shown; nothing half-arrived is ever shown."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import shutil
import signal
import socket
import threading
import time
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest

from bench.common import orthanc_running, orthanc_store
from facilities.models import DicomSender
from imaging.models import Instance, Order, Patient, PriorFetch, PriorRetrieval, PriorState, Study
from imaging.priors import prior_status_text
from imaging.selectors import studies_visible_to
from imaging.signals import instance_display_checked
from interfaces.simulator import exam_random, series_datasets
from tests.net import free_port, wait_until

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(ORTHANC).exists(), reason="orthanc not installed (apt-get install orthanc)"),
]
MRN, ISSUER = "CHI-100", "LAKESHORE"
SLICES = 3


PACS_USER, PACS_PASSWORD, PASSWORD_ENV = "readroom", "lakeshore-secret", "READROOM_TEST_PACS_PASSWORD"


@pytest.fixture
def orthanc(tmp_path, dicom_scp, monkeypatch):
    """An Orthanc 'hospital PACS' (with its DICOMweb plugin, behind HTTP basic authentication) that
    knows ReadRoom's SCP as the move destination READROOM."""
    host, scp_port, aet = dicom_scp
    monkeypatch.setenv(PASSWORD_ENV, PACS_PASSWORD)  # where a DICOMweb source's secret comes from
    with orthanc_running(
        tmp_path, dicomweb=True, Name="hospital-pacs", DicomAet="HOSP_PACS", DicomCheckCalledAet=True,
        DicomAlwaysAllowFind=True, DicomAlwaysAllowGet=True, DicomAlwaysAllowMove=True,
        DicomModalities={"readroom": [aet, host, scp_port]}, StorageAccessOnFind="Always",
        AuthenticationEnabled=True, RegisteredUsers={PACS_USER: PACS_PASSWORD},
    ) as peer:  # fmt: skip
        yield {**peer, "auth": (PACS_USER, PACS_PASSWORD)}


def orthanc_load(
    orthanc, *, seed: int, mrn: str, description: str, study_date: str, slices: int = SLICES, size: int = 64
) -> str:
    exam = exam_random(random.Random(seed), "CHI-L1", stroke_rate=0.0)
    exam = dataclasses.replace(exam, mrn=mrn, family_name="SMITH", given_name="ANNA")
    uid = None
    for ds in series_datasets(exam, slices=slices, size=size):
        ds.IssuerOfPatientID = ISSUER
        ds.StudyDescription = description
        ds.StudyDate = study_date
        ds.Modality = "CT"
        uid = str(ds.StudyInstanceUID)
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        orthanc_store(orthanc, buffer.getvalue(), auth=orthanc["auth"])
    return uid


@pytest.fixture
def hospital(orthanc, chicago):
    chest_new = orthanc_load(
        orthanc, seed=11, mrn=MRN, description="CT CHEST W CONTRAST", study_date="20260901"
    )
    chest_old = orthanc_load(
        orthanc, seed=12, mrn=MRN, description="CT CHEST WO CONTRAST", study_date="20250301"
    )
    head = orthanc_load(orthanc, seed=13, mrn=MRN, description="CT HEAD WO CONTRAST", study_date="20260101")
    namesake = orthanc_load(
        orthanc, seed=14, mrn="CHI-999", description="CT CHEST W CONTRAST", study_date="20260801"
    )
    # Orthanc's own C-STOREs (the C-MOVE) arrive as a calling AE of this facility
    DicomSender.objects.create(facility=chicago, ae_title="HOSP_PACS")
    return {"relevant": {chest_new, chest_old}, "head": head, "namesake": namesake}


def source(orthanc, method: str, **changes) -> dict:
    if method == "dicomweb":
        return {
            "name": "Lakeshore PACS", "method": "dicomweb", "base_url": orthanc["dicomweb"],
            "auth": {"type": "basic", "username": PACS_USER, "password_env": PASSWORD_ENV},
            "count": 3, "lookback_days": 3650, "timeout_seconds": 10, **changes,
        }  # fmt: skip
    return {
        "name": "Lakeshore PACS", "method": method, "host": "127.0.0.1", "port": orthanc["dicom_port"],
        "called_ae_title": "HOSP_PACS", "count": 3, "lookback_days": 3650, "timeout_seconds": 10, **changes,
    }  # fmt: skip


def new_order(chicago) -> Order:
    patient = Patient.objects.create(
        facility=chicago, mrn=MRN, assigning_authority=ISSUER, family_name="SMITH", given_name="ANNA"
    )
    return Order.objects.create(
        facility=chicago, patient=patient, accession_number="A-NEW-1", procedure_code="71250",
        procedure_text="CT CHEST WO CONTRAST",
    )  # fmt: skip


@pytest.mark.parametrize("method", ["c-move", "c-get", "dicomweb"])
def test_a_new_order_fetches_the_two_relevant_priors(
    method, hospital, orthanc, chicago, admin_chicago, admin_lakeview
):
    chicago.prior_sources = [source(orthanc, method)]
    chicago.save(update_fields=["prior_sources"])
    checked = []  # each decode check: the prior's state and its retrieval's, as the check saw them
    instance_display_checked.connect(checks_seen := _check_seen(checked), weak=False)
    try:
        # when: the order arrives (the task runs after commit)
        order = new_order(chicago)
    finally:
        instance_display_checked.disconnect(checks_seen)
    # then: both chest priors are stored, complete, as that patient's priors; never the head or namesake
    priors = Study.objects.filter(patient=order.patient)
    # each image was checked once, only after its retrieval ended: none took the CPU while the
    # priors arrived, when nobody could open them yet (a hidden RETRIEVING prior)
    assert sorted(pk for pk, _, _ in checked) == sorted(
        Instance.objects.filter(series__study__in=priors).values_list("pk", flat=True)
    )
    assert {(state, statuses) for _, state, statuses in checked} == {(PriorState.RETRIEVED, ("retrieved",))}
    assert not Instance.objects.filter(series__study__in=priors, display_checked_at__isnull=True).exists()
    assert set(priors.values_list("study_instance_uid", flat=True)) == hospital["relevant"]
    assert all(p.prior_state == PriorState.RETRIEVED and p.number_of_instances == SLICES for p in priors)
    assert not Study.objects.filter(study_instance_uid__in=[hospital["head"], hospital["namesake"]]).exists()
    assert (
        not priors.filter(worklist_routed=True).exists() and not priors.filter(order__isnull=False).exists()
    )
    assert prior_status_text(priors.first()) == "2 priors retrieved"
    # the facility sees them; another facility's user does not
    assert set(studies_visible_to(admin_chicago).values_list("pk", flat=True)) == set(
        priors.values_list("pk", flat=True)
    )
    assert not studies_visible_to(admin_lakeview).filter(patient=order.patient).exists()


def _check_seen(checked: list):
    def seen(sender, *, instance, **kwargs) -> None:
        study = Study.objects.get(series__instances=instance)
        retrievals = PriorRetrieval.objects.filter(patient=study.patient)
        statuses = tuple(retrievals.values_list("status", flat=True))
        checked.append((instance.pk, study.prior_state, statuses))

    return seen


def c_stores_counted(server) -> list:
    """Every C-STORE request the SCP receives (pynetdicom's DIMSE notification), appended as it comes."""
    from pynetdicom import evt

    received = []
    server.bind(
        evt.EVT_DIMSE_RECV,
        lambda event: (
            received.append(event.message.command_set.AffectedSOPInstanceUID)
            if type(event.message).__name__ == "C_STORE_RQ"
            else None
        ),
    )
    return received


def test_the_orders_and_the_first_images_retrievals_at_once_fetch_each_prior_once(
    hospital, orthanc, chicago, dicom_scp_server
):
    """The current study's first image is often indexed before its order is applied (bench/priors):
    "a new study without an order" and the order then each ask the sources, on two worker children at
    the same moment. Each prior must still be planned and moved once (docs/priors.md)."""
    from django.db import connection

    from interfaces.dicom.prior_scu import priors_fetch

    # given: the order and its current study, both here before the sources are set (nothing asked yet)
    order = new_order(chicago)
    current = Study.objects.create(
        facility=chicago, patient=order.patient, order=order, study_instance_uid="1.2.9.1", modalities="CT",
        description="CT CHEST WO CONTRAST",
    )  # fmt: skip
    chicago.prior_sources = [source(orthanc, "c-move")]
    chicago.save(update_fields=["prior_sources"])
    received = c_stores_counted(dicom_scp_server)
    start = threading.Barrier(2)
    errors: dict[str, list[str]] = {}

    def ask(name: str, **ids) -> None:
        try:
            start.wait(10)
            errors[name] = priors_fetch(patient_id=order.patient_id, **ids)
        finally:
            connection.close()

    # when: the study's retrieval and the order's run at once, as on the worker's two children
    threads = [
        threading.Thread(target=ask, args=("study",), kwargs={"study_id": current.pk}),
        threading.Thread(target=ask, args=("order",), kwargs={"order_id": order.pk}),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # then: both asked and both are done; each relevant prior was planned once and moved once
    assert errors == {"study": [], "order": []}
    assert set(PriorRetrieval.objects.filter(patient=order.patient).values_list("status", flat=True)) == {
        "retrieved"
    }
    planned = list(PriorFetch.objects.values_list("study_instance_uid", flat=True))
    assert sorted(planned) == sorted(hospital["relevant"])
    assert len(received) == 2 * SLICES and len(set(received)) == 2 * SLICES  # one C-STORE per instance
    priors = Study.objects.filter(patient=order.patient, prior_state=PriorState.RETRIEVED)
    assert set(priors.values_list("study_instance_uid", flat=True)) == hospital["relevant"]
    # and the reading screen's line counts each prior once, for the order's study as for any
    assert prior_status_text(current) == "2 priors retrieved"


def test_a_running_claim_older_than_the_limit_is_taken_over_by_the_next_retrieval(
    hospital, orthanc, chicago, settings, dicom_scp_server
):
    """A worker killed mid-move leaves its prior's fetch RUNNING (docs/priors.md): the next
    retrieval of the patient takes over a claim not beaten for READROOM_PRIOR_CLAIM_MAX_SECONDS and
    fetches it; a claim as old whose holder still beats (a long move) is left to it; the dead
    holder's late finish (its redelivered task) changes nothing of what the new one retrieved."""
    from django.utils import timezone

    from imaging.models import RetrievalStatus
    from imaging.priors import prior_fetch_finish

    settings.READROOM_PRIOR_CLAIM_MAX_SECONDS = 600
    chicago.prior_sources = [source(orthanc, "c-move")]
    chicago.save(update_fields=["prior_sources"])
    patient = Patient.objects.create(
        facility=chicago, mrn=MRN, assigning_authority=ISSUER, family_name="SMITH", given_name="ANNA"
    )
    # given: two earlier retrievals of the patient, each holding one relevant prior RUNNING since 20
    # minutes: one whose worker died then (no beat since), one whose worker beat 10 s ago (a long move)
    stale_uid, fresh_uid = sorted(hospital["relevant"])
    now = timezone.now()
    dead = PriorRetrieval.objects.create(
        facility=chicago, patient=patient, source_name="Lakeshore PACS (dead worker)", status="running"
    )
    alive = PriorRetrieval.objects.create(
        facility=chicago, patient=patient, source_name="Lakeshore PACS (alive)", status="running"
    )
    stale = PriorFetch.objects.create(
        retrieval=dead, study_instance_uid=stale_uid, status=RetrievalStatus.RUNNING,
        claimed_at=now - timedelta(minutes=20),
    )  # fmt: skip
    fresh = PriorFetch.objects.create(
        retrieval=alive, study_instance_uid=fresh_uid, status=RetrievalStatus.RUNNING,
        claimed_at=now - timedelta(minutes=20), alive_at=now - timedelta(seconds=10),
    )  # fmt: skip
    received = c_stores_counted(dicom_scp_server)
    # when: a new order arrives (its priors_fetch task runs after the commit, as on the worker)
    order = Order.objects.create(
        facility=chicago, patient=patient, accession_number="A-NEW-1", procedure_code="71250",
        procedure_text="CT CHEST WO CONTRAST",
    )  # fmt: skip
    # then: the stale claim moved to the order's retrieval and its prior is retrieved, whole
    stale.refresh_from_db()
    mine = PriorRetrieval.objects.get(order=order)
    assert (stale.retrieval_id, stale.status) == (mine.pk, RetrievalStatus.RETRIEVED)
    assert stale.claimed_at > now and stale.alive_at >= stale.claimed_at
    prior = Study.objects.get(study_instance_uid=stale_uid)
    assert (prior.prior_state, prior.number_of_instances) == (PriorState.RETRIEVED, SLICES)
    # the beating claim is left to its holder: never moved, nothing of it asked for
    fresh.refresh_from_db()
    assert (fresh.retrieval_id, fresh.status) == (alive.pk, RetrievalStatus.RUNNING)
    assert not Study.objects.filter(study_instance_uid=fresh_uid).exists()
    assert len(received) == SLICES
    assert prior_status_text(prior) == "1 prior retrieved, 1 retrieving"
    # and the dead worker's task, redelivered at last, finishing its old claim, changes nothing
    late = PriorFetch(
        pk=stale.pk, retrieval=dead, study_instance_uid=stale_uid, claimed_at=now - timedelta(minutes=20)
    )
    assert prior_fetch_finish(late, expected=0, failed=0, error="timed out mid-move") is True
    stale.refresh_from_db()
    assert (stale.retrieval_id, stale.status, stale.error) == (mine.pk, RetrievalStatus.RETRIEVED, "")


def test_a_source_that_is_down_is_retried_and_the_failure_shown(chicago):
    down = free_port()
    chicago.prior_sources = [
        {"name": "PACS", "method": "c-move", "host": "127.0.0.1", "port": down, "called_ae_title": "X",
         "timeout_seconds": 2}
    ]  # fmt: skip
    chicago.save(update_fields=["prior_sources"])
    order = new_order(chicago)
    retrieval = PriorRetrieval.objects.get(patient=order.patient)
    assert (retrieval.status, retrieval.attempts, retrieval.last_error) == ("failed", 1, "source unreachable")
    # the retries (scheduled with backoff by the first attempt): the last one still fails, and says so
    from interfaces.tasks import priors_fetch_task

    priors_fetch_task.apply(args=(order.patient_id,), kwargs={"order_id": order.pk}, retries=3)
    retrieval.refresh_from_db()
    assert (retrieval.status, retrieval.attempts, retrieval.last_error) == ("failed", 4, "source unreachable")
    current = Study.objects.create(
        facility=chicago, patient=order.patient, order=order, study_instance_uid="1.2.3.4.5"
    )
    assert prior_status_text(current) == "0 priors retrieved, 1 failed: source unreachable"


def test_the_first_image_of_a_study_without_an_order_asks_the_sources(chicago):
    chicago.prior_sources = [
        {"name": "PACS", "method": "c-move", "host": "127.0.0.1", "port": free_port(), "called_ae_title": "X",
         "timeout_seconds": 2}
    ]  # fmt: skip
    chicago.save(update_fields=["prior_sources"])
    patient = Patient.objects.create(facility=chicago, mrn=MRN, assigning_authority=ISSUER)
    # when: a study arrives with no order (its first image indexed it)
    study = Study.objects.create(facility=chicago, patient=patient, study_instance_uid="1.2.3.4.7")
    # then: the sources were asked for that patient, for that study
    retrieval = PriorRetrieval.objects.get(patient=patient)
    assert (retrieval.study_id, retrieval.order_id, retrieval.last_error) == (
        study.pk,
        None,
        "source unreachable",
    )
    # and a prior arriving (prior_state set) asks nothing again
    Study.objects.create(
        facility=chicago, patient=patient, study_instance_uid="1.2.3.4.8", prior_state=PriorState.RETRIEVING
    )
    assert PriorRetrieval.objects.filter(patient=patient).count() == 1


def test_a_source_outside_its_pull_hours_waits_and_is_asked_when_they_open(chicago):
    import time_machine

    from interfaces.tasks import priors_deferred_sweep

    down = free_port()
    chicago.prior_sources = [
        {"name": "PACS", "method": "c-move", "host": "127.0.0.1", "port": down, "called_ae_title": "X",
         "timeout_seconds": 2, "hours": "06:00-22:00"}
    ]  # fmt: skip
    chicago.save(update_fields=["prior_sources"])
    night = datetime(2026, 12, 2, 3, 0, tzinfo=chicago.zone)
    # when: the order arrives at 03:00, outside the hours the hospital lets us pull
    with time_machine.travel(night, tick=False):
        order = new_order(chicago)
        retrieval = PriorRetrieval.objects.get(patient=order.patient)
        # then: nothing is asked yet; the question waits, and the reading screen says so
        assert (retrieval.status, retrieval.attempts) == ("deferred", 0)
        current = Study.objects.create(
            facility=chicago, patient=order.patient, order=order, study_instance_uid="1.2.3.4.6"
        )
        assert prior_status_text(current) == "0 priors retrieved, PACS waits for its pull hours (06:00-22:00)"
        # a sweep still inside the night asks nothing
        assert priors_deferred_sweep() == 0
    # and the first sweep after 06:00 asks the source (here down: the ordinary failure and retries)
    with time_machine.travel(night + timedelta(hours=3, minutes=5), tick=False):
        assert priors_deferred_sweep() == 1
        assert priors_deferred_sweep() == 0  # claimed once
    retrieval.refresh_from_db()
    assert (retrieval.status, retrieval.last_error) == ("failed", "source unreachable")
    assert retrieval.attempts >= 1
    from radiology.schedule import PERIODIC_TASKS  # beat (and the embedded ticker) runs the sweep

    assert PERIODIC_TASKS["priors-deferred-sweep"].task == "interfaces.tasks.priors_deferred_sweep"


def test_a_source_that_rejects_the_association_is_shown(hospital, orthanc, chicago):
    chicago.prior_sources = [source(orthanc, "c-move", called_ae_title="NOT_ORTHANC")]
    chicago.save(update_fields=["prior_sources"])
    order = new_order(chicago)
    retrieval = PriorRetrieval.objects.get(patient=order.patient)
    assert (retrieval.status, retrieval.last_error) == ("failed", "association rejected")
    assert not Study.objects.filter(patient=order.patient).exists()
    assert not PriorFetch.objects.exists()


MANY = 40  # instances: enough that the move is still running when the PACS is stopped


def stop_when_instances_arrive(orthanc, uid: str) -> threading.Thread:
    """The PACS stops answering mid-move: SIGSTOP to the Orthanc process as soon as the first of the
    prior's instances is indexed (it keeps its sockets open and says nothing more — a hung PACS)."""
    from django.db import connection

    def watch() -> None:
        try:
            deadline = time.monotonic() + 30
            while not Instance.objects.filter(series__study__study_instance_uid=uid).exists():
                assert time.monotonic() < deadline, "no instance arrived"
                time.sleep(0.005)
            orthanc["process"].send_signal(signal.SIGSTOP)
        finally:
            connection.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


HUNG = {"c-move": "timed out mid-move", "c-get": "timed out mid-get"}  # method → the reason shown


@pytest.mark.parametrize("method", ["c-move", "c-get"])
def test_a_pacs_that_stops_answering_mid_move_fails_is_retried_and_shows_nothing_half(
    method, orthanc, chicago, admin_chicago, image_store, settings
):
    from interfaces.tasks import priors_fetch_task

    uid = orthanc_load(
        orthanc, seed=31, mrn=MRN, description="CT CHEST W CONTRAST", study_date="20260901", slices=MANY
    )
    DicomSender.objects.create(facility=chicago, ae_title="HOSP_PACS")
    order = new_order(chicago)  # no sources yet: nothing is asked
    current = Study.objects.create(
        facility=chicago, patient=order.patient, order=order, study_instance_uid="1.2.9"
    )
    chicago.prior_sources = [source(orthanc, method, timeout_seconds=3)]
    chicago.save(update_fields=["prior_sources"])
    settings.READROOM_PRIOR_CLAIM_BEAT_SECONDS = 0.5

    # when the first attempt's C-MOVE starts and the PACS hangs after the first instances
    watcher = stop_when_instances_arrive(orthanc, uid)
    priors_fetch_task.apply(args=(order.patient_id,), kwargs={"order_id": order.pk})
    watcher.join(5)
    # then the prior is failed with the reason, and what arrived is hidden, never shown as complete
    fetch = PriorFetch.objects.get(study_instance_uid=uid)
    assert (fetch.status, fetch.error) == ("failed", HUNG[method])
    # its claim was beaten while the worker waited on the hung PACS (≥ 3 s: the source's timeout)
    assert fetch.alive_at > fetch.claimed_at + timedelta(seconds=1)
    partial = Study.objects.get(study_instance_uid=uid)
    arrived = Instance.objects.filter(series__study=partial).count()
    assert partial.prior_state == PriorState.RETRIEVING and 0 < arrived < MANY
    assert not studies_visible_to(admin_chicago).filter(pk=partial.pk).exists()
    assert prior_status_text(current) == f"0 priors retrieved, 1 failed: {HUNG[method]}"
    retrieval = PriorRetrieval.objects.get(patient=order.patient)
    assert (retrieval.status, retrieval.attempts) == ("failed", 1)

    # when the last retry (the policy's 4th attempt) finds the PACS still hung
    paths = list(Instance.objects.filter(series__study=partial).values_list("storage_path", flat=True))
    assert all((image_store / p).exists() for p in paths)  # encrypted at rest, as they arrived
    priors_fetch_task.apply(args=(order.patient_id,), kwargs={"order_id": order.pk}, retries=3)
    # then it says so, and nothing of the half-arrived prior is left: no rows, no encrypted files
    retrieval.refresh_from_db()
    assert (retrieval.status, retrieval.attempts, retrieval.last_error) == ("failed", 4, "source unreachable")
    assert not Study.objects.filter(study_instance_uid=uid).exists()
    assert not Instance.objects.exists() and paths
    assert not any((image_store / p).exists() for p in paths)
    assert "failed" in prior_status_text(current) and "0 priors retrieved" in prior_status_text(current)
    # the hung PACS ends (its stalled association with our SCP closes before the database goes);
    # killed, as orthanc_running ends it: a graceful stop costs 3.5 s and the index is scratch
    orthanc["process"].kill()
    orthanc["process"].wait(15)


@pytest.mark.parametrize("method", ["c-move", "c-get"])
def test_a_retry_after_a_hung_move_brings_the_whole_prior(
    method, orthanc, chicago, admin_chicago, image_store
):
    from interfaces.tasks import priors_fetch_task

    uid = orthanc_load(
        orthanc, seed=32, mrn=MRN, description="CT CHEST W CONTRAST", study_date="20260901", slices=MANY
    )
    DicomSender.objects.create(facility=chicago, ae_title="HOSP_PACS")
    order = new_order(chicago)
    current = Study.objects.create(
        facility=chicago, patient=order.patient, order=order, study_instance_uid="1.2.9"
    )
    chicago.prior_sources = [source(orthanc, method, timeout_seconds=3)]
    chicago.save(update_fields=["prior_sources"])
    watcher = stop_when_instances_arrive(orthanc, uid)
    priors_fetch_task.apply(args=(order.patient_id,), kwargs={"order_id": order.pk})
    watcher.join(5)
    assert PriorFetch.objects.get(study_instance_uid=uid).status == "failed"

    # when the PACS answers again and the retry (attempt 2) runs
    orthanc["process"].send_signal(signal.SIGCONT)
    priors_fetch_task.apply(args=(order.patient_id,), kwargs={"order_id": order.pk}, retries=1)
    # then the whole prior is there, and only now shown
    prior = Study.objects.get(study_instance_uid=uid)
    assert prior.prior_state == PriorState.RETRIEVED
    assert Instance.objects.filter(series__study=prior).count() == MANY
    assert studies_visible_to(admin_chicago).filter(pk=prior.pk).exists()
    assert prior_status_text(current) == "1 prior retrieved"


class MidPduStall:
    """A TCP relay in front of the PACS that passes the association through, then forwards only the
    first half of the PACS's first P-DATA PDU and nothing more: a PACS that stops mid-PDU, its
    socket still open (what SIGSTOP does by chance when it lands inside a 512-KB C-GET PDU)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream, self.stalled, self._sockets = upstream, threading.Event(), []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self._listener.accept()
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()
            self._from_pacs(server, client)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def _from_pacs(self, server: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError), server.makefile("rb") as stream:
            while len(header := stream.read(6)) == 6:
                body = stream.read(int.from_bytes(header[2:], "big"))
                if header[0] == 0x04:  # P-DATA-TF: half of it, then silence
                    client.sendall(header + body[: len(body) // 2])
                    self.stalled.set()
                    return
                client.sendall(header + body)

    def close(self) -> None:
        for sock in [self._listener, *self._sockets]:
            sock.close()


@pytest.mark.parametrize("method", ["c-move", "c-get"])
def test_a_pacs_that_stops_mid_pdu_times_out_instead_of_hanging(method, orthanc, chicago):
    """The source's timeout bounds every read, a PDU's rest included: pynetdicom's requestor clears
    the socket timeout once connected, and a PACS stalled inside a PDU hung the retrieval (and its
    worker) for ever — the abort after the DIMSE timeout waited on a reactor blocked in recv."""
    from interfaces.dicom.prior_scu import source_get, source_move

    uid = orthanc_load(orthanc, seed=33, mrn=MRN, description="CT CHEST W CONTRAST", study_date="20260901")
    DicomSender.objects.create(facility=chicago, ae_title="HOSP_PACS")
    relay = MidPduStall(("127.0.0.1", orthanc["dicom_port"]))
    stalled_source = source(orthanc, method, port=relay.port, timeout_seconds=2)
    outcome: dict = {}

    def retrieve() -> None:
        from django.db import connection

        try:
            if method == "c-get":
                outcome["tally"] = source_get(stalled_source, uid, chicago)
            else:
                outcome["tally"] = source_move(stalled_source, uid)
        finally:
            connection.close()

    # when the retrieval meets a PDU that never ends
    retrieval = threading.Thread(target=retrieve, daemon=True)
    retrieval.start()
    retrieval.join(30)
    # then it ends on the source's timeout with the reason, rather than waiting for ever
    assert relay.stalled.is_set()
    assert not retrieval.is_alive(), "the retrieval hung on a PDU that never finished"
    assert outcome["tally"][2] == HUNG[method]
    relay.close()
    if method == "c-move":  # Orthanc's own sub-operations (to our SCP) end before the database goes
        wait_until(lambda: Instance.objects.count() == SLICES, 30, "the move's C-STOREs did not end")


@pytest.mark.parametrize("threads", [1, 3], ids=["one-thread", "three-threads"])
def test_an_instance_refused_in_a_c_get_fails_the_prior_and_is_quarantined(
    threads, orthanc, chicago, admin_chicago, settings
):
    """On several threads a C-GET's C-STOREs are answered Success once received (docs/priors.md,
    "Ingest on several threads"): an instance the ingest then refuses must still fail the prior, as
    the refusal status does on one thread — never a prior shown without it."""
    from interfaces.models import QuarantinedObject

    settings.READROOM_PRIOR_INGEST_THREADS = threads
    uid = orthanc_load(orthanc, seed=41, mrn=MRN, description="CT CHEST W CONTRAST", study_date="20260901")
    # given: one more slice of the prior whose pixel data is cut short (Rows x Columns say otherwise)
    exam = dataclasses.replace(exam_random(random.Random(42), "CHI-L1", stroke_rate=0.0), mrn=MRN)
    broken = next(iter(series_datasets(exam, slices=1, size=64)))
    broken.StudyInstanceUID, broken.IssuerOfPatientID, broken.Modality = uid, ISSUER, "CT"
    broken.StudyDescription, broken.StudyDate = "CT CHEST W CONTRAST", "20260901"
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 2]
    buffer = BytesIO()
    broken.save_as(buffer, enforce_file_format=True)
    orthanc_store(orthanc, buffer.getvalue(), auth=orthanc["auth"])
    chicago.prior_sources = [source(orthanc, "c-get")]
    chicago.save(update_fields=["prior_sources"])
    # when the order asks for it
    order = new_order(chicago)
    # then the prior failed with the count, stays hidden, and the refused slice is kept quarantined
    fetch = PriorFetch.objects.get(study_instance_uid=uid)
    assert fetch.status == "failed" and fetch.error.startswith("1 of ") and "instances failed" in fetch.error
    prior = Study.objects.get(study_instance_uid=uid)
    assert prior.prior_state == PriorState.RETRIEVING
    assert Instance.objects.filter(series__study=prior).count() == SLICES
    assert not studies_visible_to(admin_chicago).filter(pk=prior.pk).exists()
    assert QuarantinedObject.objects.filter(facility=chicago, sop_instance_uid=broken.SOPInstanceUID).exists()
    assert "1 failed" in prior_status_text(Study.objects.create(
        facility=chicago, patient=order.patient, order=order, study_instance_uid="1.2.9"
    ))  # fmt: skip


# --- the prior's own report, as the hospital's PACS holds it (a text SR, an Encapsulated PDF) ---------


def _report_object(orthanc, like, *, sop_class: str, modality: str, series_number: int, **attributes) -> None:
    """A report object in the prior's study (``like``: one of its images), stored in Orthanc."""

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    patient_and_study = ("PatientID", "IssuerOfPatientID", "PatientName", "StudyInstanceUID", "StudyDate",
                         "StudyDescription")  # fmt: skip
    for keyword in patient_and_study:
        setattr(ds, keyword, like.get(keyword, ""))
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), series_number, 1
    ds.Modality = modality
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
        sop_class,
        ds.SOPInstanceUID,
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    orthanc_store(orthanc, buffer.getvalue(), auth=orthanc["auth"])


def _code(value: str, meaning: str):
    from pydicom.dataset import Dataset

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "LN", meaning
    return code


def _text_item(value: str, meaning: str, text: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
    item.ConceptNameCodeSequence, item.TextValue = [_code(value, meaning)], text
    return item


def report_sr_store(orthanc, *, mrn: str, uid: str, study_date: str, description: str, impression: str):
    """The hospital's report of a study in Orthanc as a Basic Text SR of that study."""
    from pydicom.dataset import Dataset

    like = Dataset()  # the study's patient and study attributes, as its images carry them
    like.PatientID, like.IssuerOfPatientID, like.PatientName = mrn, ISSUER, "SMITH^ANNA"
    like.StudyInstanceUID, like.StudyDate, like.StudyDescription = uid, study_date, description
    _report_object(
        orthanc, like, sop_class="1.2.840.10008.5.1.4.1.1.88.11", modality="SR", series_number=90,
        ValueType="CONTAINER", ContinuityOfContent="SEPARATE", CompletionFlag="COMPLETE",
        VerificationFlag="VERIFIED", ConceptNameCodeSequence=[_code("18748-4", "Diagnostic imaging report")],
        ContentSequence=[
            _text_item("18782-3", "Findings", "Stable 4 mm nodule in the right upper lobe."),
            _text_item("19005-8", "Impression", impression),
        ],
    )  # fmt: skip
    return like


def prior_with_reports(orthanc, *, seed: int, pdf_text: str, sr_impression: str) -> str:
    """A prior chest CT whose study also holds the hospital's report, twice: a Basic Text SR and an
    Encapsulated PDF (how PACSes keep the RIS's report with the images)."""
    import weasyprint

    study_date, description = "20260901", "CT CHEST W CONTRAST"
    uid = orthanc_load(orthanc, seed=seed, mrn=MRN, description=description, study_date=study_date)
    like = report_sr_store(
        orthanc, mrn=MRN, uid=uid, study_date=study_date, description=description, impression=sr_impression
    )
    pdf = weasyprint.HTML(string=f"<p>{pdf_text}</p>").write_pdf()
    _report_object(
        orthanc, like, sop_class="1.2.840.10008.5.1.4.1.1.104.1", modality="DOC", series_number=91,
        DocumentTitle="Radiology report", MIMETypeOfEncapsulatedDocument="application/pdf",
        BurnedInAnnotation="YES", ConceptNameCodeSequence=[], EncapsulatedDocument=pdf,
    )  # fmt: skip
    return uid


def _signed_in(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def test_the_priors_own_reports_from_the_pacs_are_shown_beside_the_current_study(
    orthanc, chicago, admin_chicago, admin_lakeview
):
    from imaging.prior_reports import prior_documents

    # given the hospital PACS holding a prior chest CT with its report as a text SR and as a PDF
    uid = prior_with_reports(
        orthanc, seed=41, pdf_text="IMPRESSION: no pulmonary embolism.", sr_impression="Nodule unchanged."
    )
    DicomSender.objects.create(facility=chicago, ae_title="HOSP_PACS")
    chicago.prior_sources = [source(orthanc, "c-move")]
    chicago.save(update_fields=["prior_sources"])
    # when the order arrives and the prior is fetched (images and report objects, one C-MOVE)
    order = new_order(chicago)
    prior = Study.objects.get(study_instance_uid=uid)
    assert prior.prior_state == PriorState.RETRIEVED
    assert Instance.objects.filter(series__study=prior).count() == SLICES + 2
    current = Study.objects.create(
        facility=chicago, patient=order.patient, order=order, study_instance_uid="1.2.9"
    )
    # then both report objects are read back as text, with the prior they belong to
    documents = {d.kind: d for d in prior_documents(admin_chicago, current)}
    assert set(documents) == {"SR", "PDF"} and {d.study.pk for d in documents.values()} == {prior.pk}
    assert "Impression: Nodule unchanged." in documents["SR"].text
    assert "Findings: Stable 4 mm nodule" in documents["SR"].text
    assert documents["SR"].title == "Diagnostic imaging report"
    assert "no pulmonary embolism" in documents["PDF"].text and documents["PDF"].title == "Radiology report"
    # reading the prior's report is an audited read of the prior
    from auditlog.models import LogEntry

    assert LogEntry.objects.filter(
        action=LogEntry.Action.ACCESS, content_type__model="study", object_pk=str(prior.pk)
    ).exists()
    # and the reading screen's fragment shows them; another facility's user sees neither
    page = _signed_in(admin_chicago).get(f"/studies/{current.pk}/report/priors/")
    assert page.status_code == 200
    assert b"Nodule unchanged." in page.content and b"no pulmonary embolism" in page.content
    assert prior_documents(admin_lakeview, current) == []
    assert _signed_in(admin_lakeview).get(f"/studies/{current.pk}/report/priors/").status_code == 404


def test_a_prior_still_retrieving_shows_no_report(orthanc, chicago, admin_chicago):
    from imaging.prior_reports import prior_documents

    uid = prior_with_reports(orthanc, seed=42, pdf_text="IMPRESSION: normal.", sr_impression="Normal.")
    DicomSender.objects.create(facility=chicago, ae_title="HOSP_PACS")
    chicago.prior_sources = [source(orthanc, "c-move")]
    chicago.save(update_fields=["prior_sources"])
    order = new_order(chicago)
    current = Study.objects.create(
        facility=chicago, patient=order.patient, order=order, study_instance_uid="1.2.9"
    )
    assert len(prior_documents(admin_chicago, current)) == 2
    # when the prior is (again) incomplete — a half-arrived retry
    Study.objects.filter(study_instance_uid=uid).update(prior_state=PriorState.RETRIEVING)
    # then nothing of it is shown, its report neither
    assert prior_documents(admin_chicago, current) == []


# --- a DICOMweb source (QIDO-RS + WADO-RS, Orthanc's DICOMweb plugin) ---------------------------------


def test_a_dicomweb_source_with_the_wrong_password_is_refused_and_shown(
    hospital, orthanc, chicago, monkeypatch
):
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    chicago.prior_sources = [source(orthanc, "dicomweb")]
    chicago.save(update_fields=["prior_sources"])
    order = new_order(chicago)
    retrieval = PriorRetrieval.objects.get(patient=order.patient)
    assert (retrieval.status, retrieval.last_error) == ("failed", "authentication refused (HTTP 401)")
    assert not Study.objects.filter(patient=order.patient).exists() and not PriorFetch.objects.exists()


def test_a_dicomweb_source_that_is_down_is_shown(chicago):
    chicago.prior_sources = [
        {"name": "VNA", "method": "dicomweb", "base_url": f"http://127.0.0.1:{free_port()}/dicom-web",
         "timeout_seconds": 2}
    ]  # fmt: skip
    chicago.save(update_fields=["prior_sources"])
    order = new_order(chicago)
    retrieval = PriorRetrieval.objects.get(patient=order.patient)
    assert (retrieval.status, retrieval.last_error) == ("failed", "source unreachable")


def test_a_dicomweb_pacs_that_stops_mid_retrieve_shows_nothing_half_and_the_retry_brings_it_all(
    orthanc, chicago, admin_chicago, image_store
):
    from interfaces.tasks import priors_fetch_task

    # given a prior large enough (40 × 512²) that its WADO-RS answer cannot sit whole in socket buffers
    uid = orthanc_load(
        orthanc,
        seed=33,
        mrn=MRN,
        description="CT CHEST W CONTRAST",
        study_date="20260901",
        slices=MANY,
        size=512,
    )
    order = new_order(chicago)
    current = Study.objects.create(
        facility=chicago, patient=order.patient, order=order, study_instance_uid="1.2.9"
    )
    chicago.prior_sources = [source(orthanc, "dicomweb", timeout_seconds=3)]
    chicago.save(update_fields=["prior_sources"])
    # when the PACS hangs after the first instances of the retrieve
    watcher = stop_when_instances_arrive(orthanc, uid)
    priors_fetch_task.apply(args=(order.patient_id,), kwargs={"order_id": order.pk})
    watcher.join(5)
    # then the prior is failed with the reason, what arrived hidden
    fetch = PriorFetch.objects.get(study_instance_uid=uid)
    assert (fetch.status, fetch.error, fetch.instances_expected) == ("failed", "timed out mid-retrieve", MANY)
    partial = Study.objects.get(study_instance_uid=uid)
    assert partial.prior_state == PriorState.RETRIEVING
    assert 0 < Instance.objects.filter(series__study=partial).count() < MANY
    assert not studies_visible_to(admin_chicago).filter(pk=partial.pk).exists()
    assert prior_status_text(current) == "0 priors retrieved, 1 failed: timed out mid-retrieve"
    # when the PACS answers again and the retry runs: the whole prior, and only now shown
    orthanc["process"].send_signal(signal.SIGCONT)
    priors_fetch_task.apply(args=(order.patient_id,), kwargs={"order_id": order.pk}, retries=1)
    prior = Study.objects.get(study_instance_uid=uid)
    assert prior.prior_state == PriorState.RETRIEVED
    assert Instance.objects.filter(series__study=prior).count() == MANY
    assert studies_visible_to(admin_chicago).filter(pk=prior.pk).exists()
    assert prior_status_text(current) == "1 prior retrieved"


class AssociationsSeen:
    """A TCP relay in front of the PACS that passes everything through and records how many of
    ReadRoom's connections (associations) were open at once."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream, self.open, self.most, self.opened = upstream, 0, 0, 0
        self._lock, self._sockets = threading.Lock(), []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.upstream)
                self._sockets += [client, server]
                with self._lock:
                    self.open, self.opened = self.open + 1, self.opened + 1
                    self.most = max(self.most, self.open)
                threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
                threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, counted: bool = False) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        if counted:  # ReadRoom's side closed: the association is over
            with self._lock:
                self.open -= 1

    def close(self) -> None:
        for sock in [self._listener, *self._sockets]:
            sock.close()


@pytest.mark.parametrize("method", ["c-move", "c-get"])
@pytest.mark.parametrize("parallel", [1, 2])
def test_a_retrievals_priors_are_fetched_side_by_side_up_to_the_sources_parallel(
    method, parallel, hospital, orthanc, chicago
):
    """One association per prior, up to the source's ``parallel`` open at once (docs/priors.md
    "Priors fetched side by side"): one association is serial and leaves the cores idle. With
    ``parallel: 1`` they go one after another, as before; either way each prior arrives whole."""
    relay = AssociationsSeen(("127.0.0.1", orthanc["dicom_port"]))
    try:
        chicago.prior_sources = [source(orthanc, method, port=relay.port, parallel=parallel)]
        chicago.full_clean()
        chicago.save(update_fields=["prior_sources"])
        order = new_order(chicago)  # its retrieval runs after commit (eager in the tests)
        assert PriorRetrieval.objects.get(order=order).status == "retrieved"
    finally:
        relay.close()
    priors = Study.objects.filter(patient=order.patient, prior_state=PriorState.RETRIEVED)
    assert set(priors.values_list("study_instance_uid", flat=True)) == hospital["relevant"]
    assert Instance.objects.filter(series__study__in=priors).count() == 2 * SLICES
    # then: a C-FIND, then one association per prior, the two priors' at once only when the
    # source allows two
    assert relay.opened == 1 + 2
    assert relay.most == parallel


def test_a_sources_parallel_is_validated(chicago):
    from django.core.exceptions import ValidationError

    for wrong in (0, 9, "2", True):
        chicago.prior_sources = [{**source({"dicom_port": 4242}, "c-move"), "parallel": wrong}]
        with pytest.raises(ValidationError, match="parallel: a whole number from 1 to 8"):
            chicago.full_clean()


def test_only_a_c_move_is_fetched_side_by_side_unless_the_source_says(settings):
    """C-GET and DICOMweb instances are ingested in the worker's one process: side by side they
    delay the newest prior and gain nothing, so they go one at a time unless the source asks."""
    from interfaces.dicom.prior_scu import prior_parallel

    settings.READROOM_PRIOR_PARALLEL = 3
    fake = {"dicom_port": 4242, "dicomweb": "http://127.0.0.1:1/dicom-web"}
    assert prior_parallel(source(fake, "c-move")) == 3
    assert prior_parallel(source(fake, "c-get")) == 1
    assert prior_parallel(source(fake, "dicomweb")) == 1
    assert prior_parallel(source(fake, "c-get", parallel=2)) == 2
    assert prior_parallel(source(fake, "c-move", parallel=1)) == 1
