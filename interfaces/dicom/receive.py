"""The one path every received DICOM object takes, whether it came by C-STORE or STOW-RS:
decode the header (not the pixels) → write the bytes encrypted → index → a DIMSE status.

Nothing received is dropped: what cannot be decoded or indexed is quarantined (encrypted) with the
reason, and the sender gets a failure status it can act on."""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError
from django.db.models import F
from django.utils import timezone

from facilities.models import Facility
from imaging.facts import InstanceHeader
from imaging.services import IndexCache, IngestConflict, InstanceRecorded, instance_stored
from imaging.storage import StorageError, StoredFile, encrypted_delete, encrypted_write, storage_key_id
from interfaces.dicom.header import UndecodableDataset, instance_header_read
from interfaces.models import DicomAssociation, QuarantinedObject

log = logging.getLogger(__name__)
# Encrypting and fsyncing release the GIL: a few threads overlap them with the indexing.
_WRITERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dicom-store")

# C-STORE statuses (PS3.4 Annex B.2.3; STANDARDS.md §3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the sender should retry later
CANNOT_UNDERSTAND = 0xC210  # undecodable dataset: quarantined
CONFLICT = 0xC220  # contradicts what is stored (e.g. Study UID of another facility): quarantined


@dataclass(frozen=True)
class ReceiveResult:
    status: int
    recorded: InstanceRecorded | None = None
    header: InstanceHeader | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


def instance_storage_path(facility: Facility, header: InstanceHeader) -> str:
    # Deterministic, so a resent instance overwrites its own file instead of leaving an orphan.
    h = header
    return f"{facility.code}/{h.study_instance_uid}/{h.series_instance_uid}/{h.sop_instance_uid}.dcm"


def dicom_instance_receive(
    *,
    facility: Facility,
    part10: bytes,
    association_id: int | None = None,
    received_at: datetime | None = None,
    sop_instance_uid_hint: str = "",
    cache: IndexCache | None = None,
    made_by=None,
) -> ReceiveResult:
    """``made_by``: the reader whose measurement SR / key objects (``instance_stored``): never a new study,
    never counted as images."""
    received_at = received_at or timezone.now()
    try:
        header = instance_header_read(part10)
    except UndecodableDataset as exc:
        return _quarantine(
            facility, part10, association_id, received_at, str(exc), CANNOT_UNDERSTAND, sop_instance_uid_hint
        )
    path = instance_storage_path(facility, header)
    stored = StoredFile(relative_path=path, key_id=storage_key_id(), size_bytes=len(part10))
    # The encrypted write + fsync runs while the index rows are written; the transaction commits
    # only once the file is safely on disk, so there is never an index row without its file.
    write = _WRITERS.submit(encrypted_write, path, part10)
    try:
        recorded = instance_stored(
            facility=facility,
            header=header,
            stored=stored,
            received_at=received_at,
            cache=cache,
            before_commit=write.result,
            made_by=made_by,
        )
    except (OSError, StorageError) as exc:
        log.exception("could not store %s", header.sop_instance_uid)
        return ReceiveResult(OUT_OF_RESOURCES, header=header, reason=f"storage unavailable: {exc}")
    except IngestConflict as exc:
        _written_discard(write, path)
        return _quarantine(
            facility, part10, association_id, received_at, str(exc), CONFLICT, header.sop_instance_uid
        )
    except DatabaseError as exc:
        # Without its index row the sender must resend — say "try later". The file is rewritten then.
        log.exception("could not index %s", header.sop_instance_uid)
        wait([write])
        return ReceiveResult(OUT_OF_RESOURCES, header=header, reason=f"database unavailable: {exc}")
    return ReceiveResult(SUCCESS, recorded=recorded, header=header)


def _written_discard(write: Future, path: str) -> None:
    """An object that was refused keeps only its quarantined copy: no file at the indexed path."""
    wait([write])
    if write.exception() is None:
        encrypted_delete(path)


def _quarantine(facility, part10, association_id, received_at, reason, status, sop_uid) -> ReceiveResult:
    path = f"quarantine/{received_at:%Y/%m/%d}/{uuid.uuid4().hex}.bin"
    try:
        stored = encrypted_write(path, part10)
        QuarantinedObject.objects.create(
            received_at=received_at,
            association_id=association_id,
            facility=facility,
            sop_instance_uid=sop_uid[:64],
            reason=reason,
            storage_path=stored.relative_path,
            storage_key_id=stored.key_id,
            size_bytes=stored.size_bytes,
        )
    except (OSError, StorageError, DatabaseError) as exc:
        log.exception("could not quarantine an object (%s)", reason)
        return ReceiveResult(OUT_OF_RESOURCES, reason=f"{reason}; quarantine unavailable: {exc}")
    log.warning("quarantined an object from %s: %s", facility.code, reason)
    return ReceiveResult(status, reason=reason)


def dicom_association_open(
    *,
    kind: str,
    facility: Facility | None,
    calling_ae_title: str = "",
    peer: str = "",
    accepted: bool = True,
    rejection_reason: str = "",
) -> DicomAssociation:
    now = timezone.now()
    return DicomAssociation.objects.create(
        kind=kind,
        facility=facility,
        calling_ae_title=calling_ae_title[:16],
        peer=peer[:64],
        started_at=now,
        ended_at=None if accepted else now,
        accepted=accepted,
        rejection_reason=rejection_reason[:200],
    )


def dicom_association_close(
    *, association_id: int, stored: int = 0, failed: int = 0, echoes: int = 0
) -> None:
    """Counters are kept in memory during the association and written once, off the hot path."""
    DicomAssociation.objects.filter(pk=association_id).update(
        ended_at=timezone.now(),
        instances_stored=F("instances_stored") + stored,
        instances_failed=F("instances_failed") + failed,
        echoes=F("echoes") + echoes,
    )
