"""Real edge servers in the test process: the HL7 listener on its own event loop thread and the DICOM
SCP on pynetdicom's threads, both on ephemeral ports, against the test database (which is why the
tests that use them are transactional)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid

import pytest
import uvloop

from facilities.models import DicomSender, Hl7Sender
from imaging import storage
from interfaces.hl7.inbound import sender_cache_clear
from interfaces.hl7.listener import hl7_server_start
from radiology.celery import app as celery_app


@pytest.fixture
def chicago_interfaces(chicago):
    Hl7Sender.objects.create(facility=chicago, sending_application="EPIC_RAD", sending_facility="LAKESHORE")
    DicomSender.objects.create(facility=chicago, ae_title="LAKESHORE_CT1")
    sender_cache_clear()
    yield chicago
    sender_cache_clear()


@pytest.fixture
def lakeview_interfaces(lakeview):
    Hl7Sender.objects.create(facility=lakeview, sending_application="RIS_LV", sending_facility="LAKEVIEW")
    DicomSender.objects.create(facility=lakeview, ae_title="LAKEVIEW_MR")
    sender_cache_clear()
    return lakeview


@pytest.fixture
def image_store(settings, tmp_path):
    settings.READROOM_STORAGE_DIR = tmp_path / "storage"
    settings.READROOM_STORAGE_FSYNC = False  # tmpfs-like test dirs; fsync is exercised by the benchmark
    storage._keys.cache_clear()
    yield settings.READROOM_STORAGE_DIR
    storage._keys.cache_clear()


@pytest.fixture(params=["inbox-thread", "inline"])
def hl7_listener(request, transactional_db, chicago_interfaces, monkeypatch):
    """(host, port) of a running MLLP listener; stopped after the test. Every listener test runs
    twice: frames stored in the inbox thread (the embedded server) and in the loop's own thread
    (``manage.py hl7_listener``, InlineInbox)."""
    from interfaces.hl7.listener import InlineInbox

    inline = request.param == "inline"
    if inline:
        monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # as the command sets it
    with hl7_listener_running(InlineInbox() if inline else None) as address:
        yield address


@contextlib.contextmanager
def hl7_listener_running(inbox=None, **options):
    """A running MLLP listener (``options``: hl7_server_start's, e.g. ssl_context) in a thread of
    its own; its (host, port). ``inbox``: an InlineInbox, or None for the inbox thread."""
    _inbox_connection_reset()
    loop = uvloop.new_event_loop()  # the loop manage.py hl7_listener and the embedded server run
    started = threading.Event()
    state: dict = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        state["server"] = loop.run_until_complete(
            hl7_server_start(
                "127.0.0.1",
                0,
                max_frame_bytes=64 * 1024,
                **({"inbox": inbox} if inbox is not None else {}),
                **options,
            )
        )
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="test-hl7-listener", daemon=True)
    thread.start()
    assert started.wait(10)
    yield "127.0.0.1", state["server"].server.sockets[0].getsockname()[1]

    async def shutdown() -> None:
        await state["server"].close()
        # Cancelling the scheduler does not stop an apply already running in the loop's executor
        # (eager Celery applies in that thread): wait for it, or it would touch the database while
        # the test tears it down — and leave a transaction open that blocks the next flush.
        await asyncio.get_running_loop().shutdown_default_executor()
        if inbox is not None:
            inbox.connections_close()  # the inline inbox's own connection

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    _inbox_connection_reset()


def _inbox_connection_reset() -> None:
    """The listener's inbox thread outlives each test (one per process) and keeps its database
    connection: close it between tests, so no test inherits a session (or a transaction left open
    when the previous test's database went away under it) that would block the flush on PostgreSQL."""
    from django.db import connections

    from interfaces.hl7.listener import _INBOX_THREAD

    # close_all runs in the inbox thread, so it closes that thread's own connections
    _INBOX_THREAD.call_blocking(connections.close_all)


@pytest.fixture
def dicom_scp_server(transactional_db, chicago_interfaces, image_store):
    """The running Storage SCP (pynetdicom's server) on an ephemeral port: a test may ``bind`` a
    notification handler to it (e.g. count the C-STOREs it receives)."""
    from interfaces.dicom.scp import storage_scp

    server = storage_scp().start("127.0.0.1", 0)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def dicom_scp(dicom_scp_server, settings):
    """(host, port, AE title) of a running Storage SCP on an ephemeral port."""
    return "127.0.0.1", dicom_scp_server.server_address[1], settings.READROOM_DICOM_AE_TITLE


@pytest.fixture
def worker_queue():
    """Tasks go to a queue of this test's own, through the real broker (for tests that start a
    real Celery worker: see ``test_worker_recovery.start_worker``)."""
    queue = f"readroom-test-{uuid.uuid4().hex[:8]}"
    before = (celery_app.conf.task_always_eager, celery_app.conf.task_default_queue)
    celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = False, queue
    yield queue
    celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = before


def applied(timeout: float = 10) -> None:
    """Applying happens after the ACK, in a task: wait until nothing received is left unapplied."""
    import time

    from interfaces.models import InboundMessage, InboundStatus

    deadline = time.monotonic() + timeout
    while InboundMessage.objects.filter(status=InboundStatus.RECEIVED).exists():
        assert time.monotonic() < deadline, "messages still unapplied"
        time.sleep(0.02)


from tests.s3 import moto_server, s3_bucket  # noqa: E402, F401 — the S3-API store for the SCP tests
