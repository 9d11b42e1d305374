"""Group commit at C-STORE (imaging.group_commit, issue 16): the real SCP, real pynetdicom
associations at once, real PostgreSQL. Every image stored exactly once; a Success only once its
row is committed; a group that cannot commit answers no Success, loses nothing, and one bad
instance does not fail the others in its group; READROOM_DICOM_GROUP_COMMIT=false still stores."""

from __future__ import annotations

import dataclasses
import random
import threading
import time

import pytest
from django.db import connection, connections
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from imaging.models import Instance
from interfaces.dicom.scp import storage_scp
from interfaces.simulator import Procedure, exam_random, series_datasets
from tests.net import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def scp(transactional_db, chicago_interfaces, image_store, settings):
    """(port, the SCP's GroupCommitter or None) of a running Storage SCP."""

    def start(group_commit: bool = True):
        settings.READROOM_DICOM_GROUP_COMMIT = group_commit
        storage = storage_scp()
        server = storage.start("127.0.0.1", 0)
        servers.append(server)
        return server.server_address[1], storage.group

    servers: list = []
    yield start
    for server in servers:
        server.shutdown()


def series(seed: int, slices: int) -> list:
    exam = exam_random(random.Random(seed), "CHI-L1", stroke_rate=0.0)
    exam = dataclasses.replace(
        exam, procedure=Procedure("70450", "CT HEAD W/O CONTRAST", "CT", "HEAD", slices)
    )
    return list(series_datasets(exam, slices=slices, size=64))


def associate(port: int):
    ae = AE(ae_title="LAKESHORE_CT1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="READROOM")
    assert assoc.is_established
    return assoc


def committed(sop_instance_uid: str) -> bool:
    """Seen from a session of the test's own thread: only what was committed."""
    return Instance.objects.filter(sop_instance_uid=sop_instance_uid).exists()


@pytest.mark.parametrize("group_commit", [True, False], ids=["grouped", "per-instance"])
def test_concurrent_associations_store_every_image_once_and_answer_after_the_commit(scp, group_commit):
    port, group = scp(group_commit)
    sent = [series(seed, 12) for seed in range(4)]
    answers: dict[str, tuple[int, bool]] = {}
    errors: list[BaseException] = []

    def modality(datasets: list) -> None:
        try:
            assoc = associate(port)
            for ds in datasets:
                status = assoc.send_c_store(ds)
                # a Success means committed: the row is there the moment the answer arrives
                answers[ds.SOPInstanceUID] = (status.Status, committed(ds.SOPInstanceUID))
            assert assoc.send_c_store(datasets[0]).Status == 0x0000  # a resend: still one row
            assoc.release()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=modality, args=(datasets,)) for datasets in sent]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert len(answers) == 48
    assert all(answer == (0x0000, True) for answer in answers.values()), answers
    assert Instance.objects.count() == 48
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == set(answers)
    # the decode check ran for every image (tasks run inline here), gathered: at most 0.1 s later
    wait_until(
        lambda: not Instance.objects.filter(display_checked_at__isnull=True).exists(),
        timeout=5,
        message="an image's decode check never ran",
    )
    if group_commit:
        assert group.grouped >= 2, "four associations at once never shared a commit"
        assert group.fallbacks == 0
    else:
        assert group is None


@pytest.fixture
def failing_commit():
    """A deferred constraint trigger: a transaction that inserted an instance whose SOP Instance
    UID ends in .666 fails at COMMIT (as a full disk or a lost server would), not before."""
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE FUNCTION test_commit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.sop_instance_uid LIKE '%.666' THEN RAISE EXCEPTION 'commit refused'; END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER test_commit_refuse AFTER INSERT ON imaging_instance
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_commit_refuse();
        """)
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER IF EXISTS test_commit_refuse ON imaging_instance;"
            "DROP FUNCTION IF EXISTS test_commit_refuse();"
        )


def lock_waiters() -> int:
    """Sessions of this database waiting for a lock (asked outside the blocker's transaction, whose
    view of pg_stat_activity would stay as it was when that transaction began)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_a_group_that_cannot_commit_answers_no_success_and_fails_only_its_bad_instance(scp, failing_commit):
    port, group = scp(True)
    sent = [series(seed, 3) for seed in range(4)]
    bad = sent[2][1]
    bad.SOPInstanceUID = bad.SOPInstanceUID[:56] + ".666"
    bad.file_meta.MediaStorageSOPInstanceUID = bad.SOPInstanceUID
    assocs = [associate(port) for _ in sent]
    blocker = connections.create_connection("default")
    try:
        for assoc, datasets in zip(assocs, sent, strict=True):  # each series' study and series exist
            assert assoc.send_c_store(datasets[0]).Status == 0x0000
        # Hold the committer: a session of the test locks the first study's row, so the next
        # image of that study waits in its index while three others queue behind it. They are
        # then one group, and it holds the bad instance.
        study_id = Instance.objects.get(sop_instance_uid=sent[0][0].SOPInstanceUID).series.study_id
        inline_before = group.inline
        blocker.set_autocommit(False)
        with blocker.cursor() as cursor:
            cursor.execute("SELECT id FROM imaging_study WHERE id = %s FOR UPDATE", [study_id])
        statuses: dict[int, int] = {}

        def send(n: int) -> None:
            try:
                statuses[n] = assocs[n].send_c_store(sent[n][1]).Status
            finally:
                connections.close_all()

        first = threading.Thread(target=send, args=(0,))
        first.start()
        deadline = time.monotonic() + 10
        while not lock_waiters():  # the first is taken, and waits in its index
            assert time.monotonic() < deadline, "the first image did not wait for the held study"
            time.sleep(0.01)
        others = [threading.Thread(target=send, args=(n,)) for n in (1, 2, 3)]
        for thread in others:
            thread.start()
        while group.waiting() < 3:
            assert time.monotonic() < deadline, "the three did not queue behind the held group"
            time.sleep(0.01)
        assert not statuses, "an answer before any commit"
        blocker.commit()
        for thread in [first, *others]:
            thread.join(60)
    finally:
        blocker.close()
        for assoc in assocs:
            assoc.release()
    assert group.fallbacks == 1  # the group failed at COMMIT; each was then stored alone
    # the held first image found nothing to share with: committed in its handler's thread, holding
    # the commit slot, so the three queued behind it and formed the next group, as behind a group
    assert group.inline == inline_before + 1
    assert statuses == {0: 0x0000, 1: 0x0000, 2: 0xA700, 3: 0x0000}
    assert committed(sent[1][1].SOPInstanceUID) and committed(sent[3][1].SOPInstanceUID)
    assert not committed(bad.SOPInstanceUID)  # answered 0xA700: the modality sends it again
    assert Instance.objects.count() == 7


def test_a_lone_associations_decode_checks_are_published_gathered(scp, monkeypatch):
    # given one association, whose every group is of one, and the publishes counted
    import imaging.group_commit

    published: list[list[int]] = []
    publish = imaging.group_commit.instances_display_check_publish

    def counted(instance_ids):
        published.append(list(instance_ids))
        publish(instance_ids)

    monkeypatch.setattr(imaging.group_commit, "instances_display_check_publish", counted)
    port, group = scp(True)
    # when it sends 20 images
    assoc = associate(port)
    assert all(assoc.send_c_store(ds).Status == 0x0000 for ds in series(7, 20))
    assoc.release()
    # then every image is checked, in fewer tasks than images, none twice
    wait_until(
        lambda: not Instance.objects.filter(display_checked_at__isnull=True).exists(),
        timeout=5,
        message="an image's decode check never ran",
    )
    ids = [i for batch in published for i in batch]
    assert sorted(ids) == sorted(Instance.objects.values_list("pk", flat=True))
    assert len(published) < 20, published
    # and with nothing to share a commit with, each was committed in its handler's own thread
    assert group.inline == 20
