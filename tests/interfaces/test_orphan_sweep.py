"""Stored image files that no index row names (docs/storage.md, "Image files no row names"): a
writer killed mid-write leaves a partial file, a write whose commit failed a whole one. The sweep
quarantines a whole one (nothing received is lost: operations can release it), removes a partial
one, and never touches a file whose row exists or is being committed."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command

from imaging.models import Instance
from imaging.storage import ORPHANS_DIR, encrypted_read, encrypted_write, stored_entry
from interfaces.dicom import orphans
from interfaces.dicom.orphans import REASON, OrphanSweep, orphan_images_sweep
from interfaces.dicom.quarantine import quarantine_release
from interfaces.dicom.receive import dicom_instance_receive
from interfaces.models import QuarantinedObject
from interfaces.tasks import orphan_images_sweep as orphan_images_sweep_task
from radiology.schedule import PERIODIC_TASKS
from tests.dicom_data import ct_series
from tests.s3 import moto_server, s3_bucket  # noqa: F401

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
HOURS_AGO = time.time() - 2 * 3600

# The storage's own in-place write (``encrypted_write(..., unreferenced=True)``, what ingest does for
# a UID no row holds), in a process of its own whose disk stalls half-way through the ciphertext:
# the test kills it there, as the OOM killer or a power cut would.
STALLED_WRITER = """
import os, sys, time, django
django.setup()
from imaging.storage import encrypted_write
fdopen = os.fdopen

class Stalls:
    def __init__(self, fh): self.fh = fh
    def __enter__(self): return self
    def __exit__(self, *exc): return self.fh.__exit__(*exc)
    def write(self, data):
        if len(data) > 4096:  # the ciphertext (the header is short): half of it, then the disk stalls
            self.fh.write(data[: len(data) // 2]); self.fh.flush()
            print("half written", flush=True); time.sleep(600)
        return self.fh.write(data)
    def flush(self): self.fh.flush()
    def fileno(self): return self.fh.fileno()

os.fdopen = lambda fd, mode: Stalls(fdopen(fd, mode))
encrypted_write(sys.argv[1], sys.stdin.buffer.read(), unreferenced=True)
"""


def image_path(facility, ds) -> str:
    return f"{facility.code}/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"


def killed_mid_write(settings, tmp_path, path: str, part10: bytes) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "radiology.settings.base",
        "READROOM_DATA_DIR": str(tmp_path / "writer"),
        "READROOM_STORAGE_DIR": str(settings.READROOM_STORAGE_DIR),
        "READROOM_STORAGE_KEY": settings.READROOM_STORAGE_KEY,
        "READROOM_STORAGE_KEY_ID": settings.READROOM_STORAGE_KEY_ID,
    }
    for name in ("DATABASE_URL", "REDIS_URL"):  # embedded settings: the write needs neither
        env.pop(name, None)
    writer = subprocess.Popen(
        [sys.executable, "-c", STALLED_WRITER, path], cwd=ROOT, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        writer.stdin.write(part10)
        writer.stdin.close()
        line = writer.stdout.readline()
        assert line == b"half written\n", writer.stderr.read().decode()[-2000:]
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(30)
    assert writer.returncode == -signal.SIGKILL


def aged(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (HOURS_AGO, HOURS_AGO))


def test_a_killed_writers_partial_file_is_removed_and_a_whole_unindexed_one_quarantined(
    chicago, image_store, settings, tmp_path, ops_omar
):
    series = ct_series(count=4)
    held, partial, whole, young = series.datasets
    data = dict(zip(series.sop_uids, series.part10(), strict=True))
    # given an image received and indexed
    assert dicom_instance_receive(facility=chicago, part10=data[held.SOPInstanceUID]).ok
    # a writer killed half-way through a new image (no row: its commit never came)
    killed_mid_write(settings, tmp_path, image_path(chicago, partial), data[partial.SOPInstanceUID])
    partial_file = image_store / image_path(chicago, partial)
    assert 0 < partial_file.stat().st_size < len(data[partial.SOPInstanceUID])
    # a whole image written in place whose commit failed (the modality was told 0xA700)
    encrypted_write(image_path(chicago, whole), data[whole.SOPInstanceUID], unreferenced=True)
    # one being written now (its row may commit any moment), and a file that is not an image
    encrypted_write(image_path(chicago, young), data[young.SOPInstanceUID], unreferenced=True)
    foreign = image_store / chicago.code / "notes.txt"
    foreign.write_bytes(b"an operator's note")
    held_file, whole_file = image_store / image_path(chicago, held), image_store / image_path(chicago, whole)
    aged(held_file, partial_file, whole_file, foreign)
    # when the sweep runs
    out = io.StringIO()
    call_command("orphan_images_sweep", stdout=out)
    # then the partial file is gone, and the whole one is in the quarantine, its image intact
    assert out.getvalue().startswith("1 quarantined, 1 partial removed")
    assert not partial_file.exists() and not whole_file.exists()
    kept = QuarantinedObject.objects.get()
    assert (kept.facility, kept.sop_instance_uid, kept.resolved_at) == (chicago, whole.SOPInstanceUID, None)
    assert kept.reason.startswith(REASON) and encrypted_read(kept.storage_path) == data[whole.SOPInstanceUID]
    # and the indexed image, the young one and the foreign file are untouched; nothing left aside
    assert encrypted_read(image_path(chicago, held)) == data[held.SOPInstanceUID]
    assert (image_store / image_path(chicago, young)).exists() and foreign.exists()
    assert not [p for p in (image_store / ORPHANS_DIR).rglob("*") if p.is_file()]
    # when operations release it (the modality gave up resending): it is indexed like any image
    quarantine_release(object_id=kept.pk, by=ops_omar, reason="the modality stopped resending")
    instance = Instance.objects.get(sop_instance_uid=whole.SOPInstanceUID)
    assert encrypted_read(instance.storage_path) == data[whole.SOPInstanceUID]
    # and the beat's task finds nothing more to do (the young one is left); one sweep at a time
    assert orphan_images_sweep_task.apply().get() == {"quarantined": 0, "removed": 0, "kept": 1}
    assert PERIODIC_TASKS["orphan-images-sweep"].task == orphan_images_sweep_task.name
    cache.add(orphans.SWEEP_LOCK, 1, 60)
    with pytest.raises(CommandError, match="another orphan sweep is running"):
        call_command("orphan_images_sweep")
    cache.delete(orphans.SWEEP_LOCK)


def test_a_resend_while_the_sweep_judges_the_file_keeps_the_resends_file_and_row(chicago, image_store):
    series = ct_series(count=2)
    first, second = series.datasets
    data = dict(zip(series.sop_uids, series.part10(), strict=True))
    for ds in (first, second):  # two old files no row names
        encrypted_write(image_path(chicago, ds), data[ds.SOPInstanceUID], unreferenced=True)
        aged(image_store / image_path(chicago, ds))
    # given the sweep has listed the first (no row) when the modality resends it: its file is
    # renamed over the old one and its row commits before the sweep moves the file
    entry = stored_entry(image_path(chicago, first))
    assert dicom_instance_receive(facility=chicago, part10=data[first.SOPInstanceUID]).ok
    # then the sweep sees another file (its inode) and puts it back, untouched
    assert not orphans.orphan_set_aside(entry)
    assert encrypted_read(image_path(chicago, first)) == data[first.SOPInstanceUID]
    # given the second is set aside when the resend comes: the resend writes a file of its own
    entry = stored_entry(image_path(chicago, second))
    assert orphans.orphan_set_aside(entry)
    assert not (image_store / image_path(chicago, second)).exists()
    assert dicom_instance_receive(facility=chicago, part10=data[second.SOPInstanceUID]).ok
    # then the row asked again just before anything is removed: the resend's file stays at its path,
    # nothing is quarantined, and the old copy set aside is gone
    sweep = OrphanSweep()
    orphans._aside_judge(chicago.pk, image_path(chicago, second), second.SOPInstanceUID, sweep)
    assert sweep == OrphanSweep(kept=1) and not QuarantinedObject.objects.exists()
    assert (
        encrypted_read(Instance.objects.get(sop_instance_uid=second.SOPInstanceUID).storage_path)
        == (data[second.SOPInstanceUID])
    )
    assert not [p for p in (image_store / ORPHANS_DIR).rglob("*") if p.is_file()]


def test_on_an_object_store_a_whole_object_is_quarantined_and_a_resends_put_is_never_deleted(
    chicago,
    s3_bucket,  # noqa: F811
):
    from imaging.object_store import object_delete, object_get, object_put

    series = ct_series(count=4)
    held, whole, damaged, resent = series.datasets
    data = dict(zip(series.sop_uids, series.part10(), strict=True))
    # given an indexed image, an object whose commit failed, and a damaged one (no rows)
    assert dicom_instance_receive(facility=chicago, part10=data[held.SOPInstanceUID]).ok
    encrypted_write(image_path(chicago, whole), data[whole.SOPInstanceUID])
    encrypted_write(image_path(chicago, damaged), data[damaged.SOPInstanceUID])
    blob = object_get(image_path(chicago, damaged))
    object_put(image_path(chicago, damaged), blob[: len(blob) // 2])
    # when the sweep runs two hours later (LastModified is the store's clock)
    sweep = orphan_images_sweep(now=time.time() + 2 * 3600)
    # then the whole one is quarantined and deleted, the damaged one deleted, the indexed one kept
    assert sweep == OrphanSweep(quarantined=1, removed=1, kept=0)
    kept = QuarantinedObject.objects.get()
    assert encrypted_read(kept.storage_path) == data[whole.SOPInstanceUID]
    for ds in (whole, damaged):
        assert stored_entry(image_path(chicago, ds)) is None
    assert encrypted_read(image_path(chicago, held)) == data[held.SOPInstanceUID]
    # given an old object listed (HEAD: its ETag) when a resend's PUT replaces it
    path = image_path(chicago, resent)
    encrypted_write(path, b"an earlier attempt")
    entry = stored_entry(path)
    encrypted_write(path, data[resent.SOPInstanceUID])
    # then the sweep reads another version and leaves it, and a delete of the listed version is
    # refused by the store (If-Match)
    sweep = OrphanSweep()
    orphans._object_judge(chicago.pk, entry, resent.SOPInstanceUID, sweep)
    assert sweep == OrphanSweep(kept=1) and QuarantinedObject.objects.count() == 1
    assert not object_delete(path, if_match=entry.tag)
    assert encrypted_read(path) == data[resent.SOPInstanceUID]
