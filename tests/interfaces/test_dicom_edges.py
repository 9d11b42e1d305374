"""The SCP at its edge under hostile or careless clients (issue #15): idle associations and bare TCP
probes cannot crowd out a modality, one AE cannot take every association, an AE title connecting
from outside its facility's allow-list is refused, and the SCP speaks TLS to dcmtk's storescu."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import threading
import time

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove, Verification

from facilities.models import DicomSender
from imaging.models import Instance
from interfaces.dicom.scp import _server_stop, storage_scp
from interfaces.models import DicomAssociation
from tests.interfaces.test_dicom_scp import dcmtk, write_series
from tests.net import free_port, wait_until
from tests.tls_certs import tls_files_write

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which("storescu") is None, reason="dcmtk not installed (apt-get install dcmtk)"
    ),
]


@contextlib.contextmanager
def scp_running():
    """An SCP built from the settings as they are now (the tests change them first)."""
    server = storage_scp().start("127.0.0.1", 0)
    try:
        yield server, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _association(port: int, calling: str, *, tls: ssl.SSLContext | None = None):
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = 10
    tls_args = (tls, "localhost") if tls else None
    return ae.associate("127.0.0.1", port, ae_title="READROOM", tls_args=tls_args)


def _rejection(assoc) -> tuple[int, int, int]:
    rsp = assoc.acceptor.primitive
    return rsp.result, rsp.result_source, rsp.diagnostic


@pytest.fixture
def idle_senders(chicago_interfaces):
    for title in ("IDLE_A", "IDLE_B"):
        DicomSender.objects.create(facility=chicago_interfaces, ae_title=title)
    return chicago_interfaces


def test_idle_associations_and_probes_do_not_crowd_out_a_modality(idle_senders, image_store, tmp_path):
    held, probes = [], []
    with scp_running() as (server, port):
        try:
            # 20 associations that send nothing after A-ASSOCIATE-AC, 10 from each of two AEs
            for title in ("IDLE_A", "IDLE_B"):
                for _ in range(10):
                    held.append(_association(port, title))
                    assert held[-1].is_established
            # the 11th of one AE is refused: transient, service provider, local limit exceeded
            eleventh = _association(port, "IDLE_A")
            assert eleventh.is_rejected and _rejection(eleventh) == (0x02, 0x03, 0x02)
            refused = DicomAssociation.objects.get(calling_ae_title="IDLE_A", accepted=False)
            assert "limit 10" in refused.rejection_reason
            # and 20 bare TCP connections that never send an A-ASSOCIATE-RQ: 40 idle clients
            for _ in range(20):
                probes.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            wait_until(lambda: len(server.active_associations) >= 40, timeout=10)
            # then a real modality still stores (pynetdicom alone counted all 40 against its 32)
            _exam, paths = write_series(tmp_path, slices=2, seed=71)
            result = dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", "READROOM", "127.0.0.1", str(port),
                           *map(str, paths))  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert Instance.objects.count() == 2
        finally:
            for assoc in held:
                assoc.release()
            for probe in probes:
                probe.close()


def test_the_total_limit_refuses_transient_and_frees_a_slot_when_one_ends(idle_senders, settings):
    settings.READROOM_DICOM_MAX_ASSOCIATIONS = 2
    with scp_running() as (_server, port):
        first, second = _association(port, "IDLE_A"), _association(port, "IDLE_B")
        assert first.is_established and second.is_established
        third = _association(port, "LAKESHORE_CT1")
        assert third.is_rejected and _rejection(third) == (0x02, 0x03, 0x02)
        first.release()
        ended = DicomAssociation.objects.filter(calling_ae_title="IDLE_A", ended_at__isnull=False)
        wait_until(ended.exists, timeout=10)
        again = _association(port, "LAKESHORE_CT1")
        assert again.is_established and again.send_c_echo().Status == 0x0000
        again.release()
        second.release()


def test_an_idle_association_is_aborted_after_the_network_timeout(chicago_interfaces, settings):
    settings.READROOM_DICOM_NETWORK_TIMEOUT = 1
    with scp_running() as (_server, port):
        assoc = _association(port, "LAKESHORE_CT1")
        assert assoc.is_established
        # the SCP gives up on it (pynetdicom's default kept it 60 s)
        wait_until(lambda: assoc.is_aborted, timeout=15, message="idle association kept open")
        wait_until(
            lambda: DicomAssociation.objects.filter(calling_ae_title="LAKESHORE_CT1", ended_at__isnull=False),
            timeout=10,
        )


def test_a_move_longer_than_the_network_timeout_is_not_aborted(
    chicago_interfaces, settings, image_store, tmp_path
):
    """The requestor waits silently while the sub-operations go to the destination: what the SCP
    sends counts as activity, so the association ends with the requestor's release, not an abort."""
    settings.READROOM_DICOM_NETWORK_TIMEOUT = 2
    exam, paths = write_series(tmp_path, slices=3, seed=74)

    def slow_store(event):  # the destination PACS takes its time over each image
        time.sleep(1.2)
        return 0x0000

    pacs = AE(ae_title="LAKESHORE_PACS")
    pacs.supported_contexts = AllStoragePresentationContexts
    pacs_port = free_port()
    destination = pacs.start_server(
        ("127.0.0.1", pacs_port), block=False, evt_handlers=[(evt.EVT_C_STORE, slow_store)]
    )
    chicago_interfaces.dicom_move_destinations = [
        {"ae_title": "LAKESHORE_PACS", "host": "127.0.0.1", "port": pacs_port}
    ]
    chicago_interfaces.save()
    try:
        with scp_running() as (_server, port):
            stored = dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", "READROOM", "127.0.0.1", str(port),
                           *map(str, paths))  # fmt: skip
            assert stored.returncode == 0, stored.stderr
            scu = AE(ae_title="LAKESHORE_CT1")
            scu.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = scu.associate("127.0.0.1", port, ae_title="READROOM")
            query = Dataset()
            query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", exam.study_uid
            responses = list(
                assoc.send_c_move(query, "LAKESHORE_PACS", StudyRootQueryRetrieveInformationModelMove)
            )
            assert responses[-1][0].Status == 0x0000  # 3 images, ~3.6 s: longer than the timeout
            assert not assoc.is_aborted
            assoc.release()
            assert assoc.is_released and not assoc.is_aborted
    finally:
        destination.shutdown()


def test_a_silent_probe_is_closed_after_the_acse_timeout(chicago_interfaces, settings):
    settings.READROOM_DICOM_ACSE_TIMEOUT = 1
    with scp_running() as (_server, port), socket.create_connection(("127.0.0.1", port)) as probe:
        probe.settimeout(15)  # pynetdicom's default ACSE timeout is 30 s
        assert probe.recv(64) == b""  # closed by the SCP, with nothing said


def test_a_probe_does_not_hold_a_stop_for_its_grace(chicago_interfaces, settings):
    settings.READROOM_DICOM_ACSE_TIMEOUT = 120  # the probe would outlive the grace
    server = storage_scp().start("127.0.0.1", 0)
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port)):
        wait_until(lambda: len(server.active_associations) == 1, timeout=10)
        stopper = threading.Thread(target=_server_stop, args=(server, 60.0))
        stopper.start()
        stopper.join(15)
        assert not stopper.is_alive(), "the stop waited for a connection that never associated"
    server.server_close()


def test_an_ae_title_from_outside_its_allow_list_is_refused(chicago_interfaces, tmp_path):
    _exam, paths = write_series(tmp_path, slices=1, seed=72)
    chicago_interfaces.dicom_allowed_networks = ["127.0.0.2/32"]
    chicago_interfaces.save()
    with scp_running() as (_server, port):
        result = dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", "READROOM", "127.0.0.1", str(port),
                       str(paths[0]))  # fmt: skip
        assert result.returncode != 0
        assert "Rejected Permanent" in result.stderr and "Calling AE Title Not Recognized" in result.stderr
        refused = DicomAssociation.objects.get(calling_ae_title="LAKESHORE_CT1")
        assert (
            not refused.accepted and "127.0.0.1 not in CHI-L1's DICOM allow-list" in refused.rejection_reason
        )
        assert not Instance.objects.exists()
        # and from an allowed network the same modality is accepted
        chicago_interfaces.dicom_allowed_networks = ["10.0.0.0/8", "127.0.0.0/8"]
        chicago_interfaces.save()
        result = dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", "READROOM", "127.0.0.1", str(port),
                       str(paths[0]))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert Instance.objects.count() == 1


@pytest.fixture
def tls_files(tmp_path_factory):
    return tls_files_write(tmp_path_factory.mktemp("tls"))


def test_storescu_stores_over_tls(chicago_interfaces, image_store, settings, tls_files, tmp_path):
    settings.READROOM_DICOM_TLS_CERT_FILE = str(tls_files.server_cert)
    settings.READROOM_DICOM_TLS_KEY_FILE = str(tls_files.server_key)
    settings.READROOM_DICOM_TLS_CA_FILE = str(tls_files.ca)  # client certificates required
    _exam, paths = write_series(tmp_path, slices=2, seed=73)
    tls = ("+tls", str(tls_files.client_key), str(tls_files.client_cert), "+cf", str(tls_files.ca))
    with scp_running() as (_server, port):
        result = dcmtk("storescu", *tls, "-aet", "LAKESHORE_CT1", "-aec", "READROOM", "127.0.0.1", str(port),
                       *map(str, paths))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert Instance.objects.count() == 2
        # plain DICOM to the TLS port fails (no images in clear text)
        plain = dcmtk(
            "echoscu", "-to", "5", "-aet", "LAKESHORE_CT1", "-aec", "READROOM", "127.0.0.1", str(port)
        )
        assert plain.returncode != 0
        # a client whose certificate no trusted CA signed is refused in the handshake
        anonymous = dcmtk("echoscu", "+tla", "-ic", "-aet", "LAKESHORE_CT1", "-aec", "READROOM",
                          "127.0.0.1", str(port))  # fmt: skip
        assert anonymous.returncode != 0
        # a silent TLS client does not stop the SCP accepting: a pynetdicom SCU over TLS still gets in
        with socket.create_connection(("127.0.0.1", port)):
            context = ssl.create_default_context(cafile=str(tls_files.ca))
            context.load_cert_chain(str(tls_files.client_cert), str(tls_files.client_key))
            assoc = _association(port, "LAKESHORE_CT1", tls=context)
            assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
            assoc.release()
