"""Stored image files that no index row names (docs/storage.md, "Image files no row names"): a
process killed while writing a new image in place (a partial file), or a write whose transaction
then failed (a whole one; on an object store the only kind, a PUT is whole or absent).

**Decision.** None was ever acknowledged: a C-STORE success goes out only after the row commits, so
the modality was told "out of resources" or nothing and still holds the image. Yet a modality may
give up after its retries, so nothing readable is thrown away:
- a whole file (its AES-GCM tag verifies) goes into the quarantine, a ``QuarantinedObject`` of its
  facility, which operations release (it is indexed then) or discard, as any quarantined object;
- a partial file (it fails the tag: the ciphertext was cut) is removed — no image can be read from
  it, and what the modality still holds is whole;
- a file encrypted with a key this process lacks is left where it is (it cannot be judged here).

Never a file whose row exists or is being committed: ingest writes the file *before* its row, so
only files older than ``READROOM_ORPHAN_GRACE_SECONDS`` (default 3600; a write and its commit take
milliseconds) are judged, and the row is asked again just before anything is removed. On the file
system the file is first moved out of its path (one atomic rename, the inode checked after), so a
resend arriving meanwhile writes a file of its own and is never the one removed; a row that
appeared meanwhile puts the file back. On an object store the object is read with its ETag and
deleted with ``If-Match`` that ETag: a resend's PUT in between makes the store refuse the delete.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from facilities.models import Facility
from imaging.models import Instance
from imaging.storage import (
    StorageError,
    StorageKeyMissing,
    StoredEntry,
    blob_decrypt,
    encrypted_delete,
    encrypted_write,
    object_store_configured,
    orphan_aside_read,
    orphan_aside_remove,
    orphan_put_back,
    orphan_set_aside,
    orphans_set_aside,
    stored_entry,
    stored_paths,
)
from interfaces.models import QuarantinedObject

log = logging.getLogger(__name__)

REASON = (
    "stored image with no index row, found by the orphan sweep: never acknowledged to the sender "
    "(a write whose commit failed); release it to index it"
)
BATCH = 500  # UIDs asked of the index in one query


@dataclass
class OrphanSweep:
    quarantined: int = 0  # whole files no row names: kept in the quarantine
    removed: int = 0  # partial files (failed their GCM tag): removed
    kept: int = 0  # too young, a row appeared, replaced meanwhile, or a key we lack


SWEEP_LOCK = "interfaces:orphan-images-sweep"
SWEEP_LOCK_SECONDS = 6 * 3600  # longer than a sweep of a large store; freed when it ends


def orphan_images_sweep_once(*, now: float | None = None) -> OrphanSweep | None:
    """``orphan_images_sweep`` unless another is running (the beat task and the command, or two
    beats): one at a time, so one orphan is judged once (None when another holds the lock)."""
    if not cache.add(SWEEP_LOCK, 1, SWEEP_LOCK_SECONDS):
        return None
    try:
        return orphan_images_sweep(now=now)
    finally:
        cache.delete(SWEEP_LOCK)


def orphan_images_sweep(*, now: float | None = None) -> OrphanSweep:
    """Judge every stored image file of every facility that no ``Instance`` row holds (see the
    module's docstring). One query per ``BATCH`` files listed; only the files no row holds are
    looked at further."""
    cutoff = (time.time() if now is None else now) - settings.READROOM_ORPHAN_GRACE_SECONDS
    sweep = OrphanSweep()
    codes = dict(Facility.objects.values_list("code", "pk"))
    if not object_store_configured():
        for path in orphans_set_aside():  # a sweep killed while it judged them: finish its work
            facility_id = codes.get(path.split("/", 1)[0])
            if facility_id is not None and (uid := image_uid(path)) is not None:
                _aside_judge(facility_id, path, uid, sweep)
    for code, facility_id in codes.items():
        batch: list[tuple[str, str]] = []
        for path in stored_paths(code):
            if (uid := image_uid(path)) is not None:
                batch.append((path, uid))
            if len(batch) == BATCH:
                _batch_sweep(facility_id, batch, cutoff, sweep)
                batch = []
        _batch_sweep(facility_id, batch, cutoff, sweep)
    if sweep.quarantined or sweep.removed:
        log.warning("orphan sweep: %s", sweep)
    return sweep


def image_uid(path: str) -> str | None:
    """The SOP Instance UID of an image's path (``<code>/<study>/<series>/<sop>.dcm``, as ingest
    names it); None for anything else (a metadata side-car, a foreign file)."""
    parts = path.split("/")
    if len(parts) != 4 or not parts[3].endswith(".dcm"):
        return None
    return parts[3].removesuffix(".dcm") or None


def _held(uids: list[str]) -> set[str]:
    """The UIDs an index row holds (at whatever path: a file whose UID is held is never touched)."""
    return set(Instance.objects.filter(sop_instance_uid__in=uids).values_list("sop_instance_uid", flat=True))


def _batch_sweep(facility_id: int, batch: list[tuple[str, str]], cutoff: float, sweep: OrphanSweep) -> None:
    held = _held([uid for _, uid in batch]) if batch else set()
    for path, uid in batch:
        if uid in held:
            continue
        entry = stored_entry(path)
        if entry is None or entry.modified >= cutoff:
            sweep.kept += entry is not None  # young: maybe a write whose row commits any moment
            continue
        try:
            if object_store_configured():
                _object_judge(facility_id, entry, uid, sweep)
            elif orphan_set_aside(entry):
                _aside_judge(facility_id, path, uid, sweep)
            else:
                sweep.kept += 1  # replaced since it was listed: a resend's file
        except (OSError, StorageError) as exc:  # one file's trouble (the store away): the next day again
            log.warning("orphan sweep: %s not judged: %s", path, exc)
            sweep.kept += 1


def _aside_judge(facility_id: int, path: str, uid: str, sweep: OrphanSweep) -> None:
    """A file set aside (file system): back to its path if a row holds its UID now, else judged."""
    if _held([uid]):
        orphan_put_back(path)
        sweep.kept += 1
        return
    blob, written = orphan_aside_read(path)
    try:
        plaintext = blob_decrypt(blob, path)
    except StorageKeyMissing as exc:
        log.warning("orphan sweep: %s left in place: %s", path, exc)
        orphan_put_back(path)
        sweep.kept += 1
        return
    except StorageError:
        log.warning("orphan sweep: removed %s (%d bytes), a partial write no row names", path, len(blob))
        orphan_aside_remove(path)
        sweep.removed += 1
        return
    _quarantine(facility_id, path, uid, plaintext, written)
    orphan_aside_remove(path)  # after the quarantine's row committed
    sweep.quarantined += 1


def _object_judge(facility_id: int, entry: StoredEntry, uid: str, sweep: OrphanSweep) -> None:
    """An object no row names (object store): read with its ETag, the row asked again, and deleted
    only as that version (``If-Match``)."""
    from imaging.object_store import object_delete, object_get_tagged

    path = entry.relative_path
    blob, etag = object_get_tagged(path)
    if etag != entry.tag or _held([uid]):
        sweep.kept += 1  # a resend's PUT, or a row that committed meanwhile
        return
    try:
        plaintext = blob_decrypt(blob, path)
    except StorageKeyMissing as exc:
        log.warning("orphan sweep: %s left in place: %s", path, exc)
        sweep.kept += 1
        return
    except StorageError:
        if object_delete(path, if_match=etag):
            log.warning("orphan sweep: removed %s (%d bytes), damaged, no row names it", path, len(blob))
            sweep.removed += 1
        else:
            sweep.kept += 1
        return
    kept = _quarantine(facility_id, path, uid, plaintext, entry.modified)
    if _held([uid]) or not object_delete(path, if_match=etag):
        # a resend came between the read and the delete: its object and row stand; the copy
        # quarantined of the version it replaced is dropped again
        _unquarantine(kept)
        sweep.kept += 1
        return
    sweep.quarantined += 1


def _quarantine(
    facility_id: int, path: str, uid: str, plaintext: bytes, written: float
) -> QuarantinedObject | None:
    """The file's image as a quarantined object of its facility (committed when this returns),
    received when the file was written. None when a sweep killed after this step already made it
    (the same UID, size and reason)."""
    earlier = QuarantinedObject.objects.filter(
        facility_id=facility_id, sop_instance_uid=uid[:64], reason__startswith=REASON,
        size_bytes=len(plaintext), resolved_at__isnull=True,
    ).exists()  # fmt: skip
    if earlier:
        return None
    now = timezone.now()
    stored = encrypted_write(f"quarantine/{now:%Y/%m/%d}/{uuid.uuid4().hex}.bin", plaintext)
    try:
        with transaction.atomic():
            kept = QuarantinedObject.objects.create(
                received_at=datetime.fromtimestamp(written, tz=UTC), facility_id=facility_id,
                sop_instance_uid=uid[:64],
                reason=f"{REASON} (was {path[:180]})", storage_path=stored.relative_path,
                storage_key_id=stored.key_id, size_bytes=stored.size_bytes,
            )  # fmt: skip
    except BaseException:
        encrypted_delete(stored.relative_path)
        raise
    log.warning("orphan sweep: %s quarantined as object %s", path, kept.pk)
    return kept


def _unquarantine(kept: QuarantinedObject | None) -> None:
    if kept is not None:
        QuarantinedObject.objects.filter(pk=kept.pk).delete()
        encrypted_delete(kept.storage_path)
