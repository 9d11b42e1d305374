"""The one path every received DICOM object takes, whether it came by C-STORE or STOW-RS:
decode the header (not the pixels) → write the bytes encrypted → index → a DIMSE status.

Nothing received is dropped: what cannot be decoded or indexed is quarantined (encrypted) with the
reason, and the sender gets a failure status it can act on."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime

from auditlog.models import LogEntry
from django.db import DatabaseError
from django.db.models import F
from django.utils import timezone
from pydicom.dataset import Dataset

from accounts.audit import audit_entry_write
from facilities.models import Facility
from imaging.ai import ai_result_record
from imaging.facts import AiResultFacts, InstanceHeader
from imaging.group_commit import GroupCommitter, GroupMember
from imaging.models import Instance, Study
from imaging.report_history import historical_reports_link
from imaging.selectors import instance_storage_path_of
from imaging.services import (
    IndexCache,
    IngestConflict,
    InstanceRecorded,
    StudyNotYetStored,
    instance_index_in_group,
    instance_stored,
)
from imaging.storage import (
    StorageError,
    StoredFile,
    encrypted_delete,
    encrypted_read,
    encrypted_write,
    storage_key_id,
)
from imaging.transcoding import pixel_problem, same_image, syntax_decodable, syntax_name
from interfaces.dicom.ai_objects import AI_OBJECT_CLASSES, MalformedAiResult, ai_facts_read
from interfaces.dicom.header import UndecodableDataset, dataset_read, instance_header_read
from interfaces.dicom.integrity import pixel_data_problem
from interfaces.dicom.quarantine import ai_objects_waiting_link
from interfaces.hl7.inbound import ai_orus_waiting_release
from interfaces.models import DicomAssociation, QuarantinedObject

log = logging.getLogger(__name__)
# Encrypting and fsyncing release the GIL: a few threads overlap them with the indexing.
_WRITERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dicom-store")

# C-STORE statuses (PS3.4 Annex B.2.3; STANDARDS.md §3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the sender should retry later
CANNOT_UNDERSTAND = 0xC210  # undecodable dataset: quarantined
CONFLICT = 0xC220  # contradicts what is stored (e.g. Study UID of another facility): quarantined
# A SOP Instance UID already stored with other content: refused, never overwritten (issue #15).
# 0xA9xx "Data Set does not match SOP Class" is the failure class PS3.4 gives a content conflict.
DUPLICATE_CONFLICT = 0xA900
DATA_SET_MISMATCH = 0xA900  # truncated, or pixel data contradicting its own dimensions or too big
# A transfer syntax ReadRoom cannot decode (PS3.18 Table 10.5.3-2 for STOW-RS: "Referenced Transfer
# Syntax not supported"). The SCP refuses such syntaxes already at negotiation; STOW sees it here.
SYNTAX_NOT_SUPPORTED = 0xC122
PIXELS_UNDECODABLE = 0xC211  # "cannot understand" range: the pixel data is broken (quarantined)


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
    dataset: Dataset | None = None,
    group: GroupCommitter | None = None,
) -> ReceiveResult:
    """``made_by``: the reader whose measurement SR / key objects (``instance_stored``): never a new study,
        never counted as images. ``dataset``: ``part10`` already parsed by ``dataset_read`` (STOW reads
        the header first): every check below reads that one parse. ``group``: the SCP's group commit
    (``imaging.group_commit``) for an image; an AI result or a reader's object is stored alone."""
    received_at = received_at or timezone.now()
    try:
        dataset = dataset if dataset is not None else dataset_read(part10)
        header = instance_header_read(dataset)
    except UndecodableDataset as exc:
        return _quarantine(
            facility, part10, association_id, received_at, str(exc), CANNOT_UNDERSTAND, sop_instance_uid_hint
        )
    if not syntax_decodable(header.transfer_syntax_uid):
        reason = (
            f"transfer syntax {syntax_name(header.transfer_syntax_uid)} cannot be decoded here; "
            "send it uncompressed or in a syntax of ReadRoom's conformance statement"
        )
        return _quarantine(
            facility,
            part10,
            association_id,
            received_at,
            reason,
            SYNTAX_NOT_SUPPORTED,
            header.sop_instance_uid,
        )
    # header-only length checks first: cheap, and they refuse a claimed 4 GB before any decode
    if problem := pixel_data_problem(part10, dataset):
        return _quarantine(
            facility, part10, association_id, received_at, problem, DATA_SET_MISMATCH, header.sop_instance_uid
        )
    problem = pixel_problem(dataset) if made_by is None else ""
    if problem:
        return _quarantine(
            facility,
            part10,
            association_id,
            received_at,
            problem,
            PIXELS_UNDECODABLE,
            header.sop_instance_uid,
        )
    ai_facts = None
    if made_by is None and header.sop_class_uid in AI_OBJECT_CLASSES:
        try:
            ai_facts = ai_facts_read(dataset, header.sop_class_uid)
        except MalformedAiResult as exc:
            return _quarantine(
                facility,
                part10,
                association_id,
                received_at,
                str(exc),
                CANNOT_UNDERSTAND,
                header.sop_instance_uid,
            )
    held = instance_storage_path_of(header.sop_instance_uid)
    if held is not None:
        duplicate = _duplicate_check(facility, header, part10, association_id, received_at, held)
        if duplicate is not None:
            return duplicate
    path = instance_storage_path(facility, header)
    stored = StoredFile(relative_path=path, key_id=storage_key_id(), size_bytes=len(part10))
    # The encrypted write + fsync runs while the index rows are written; the transaction commits
    # only once the file is safely on disk, so there is never an index row without its file. No
    # row names the path of a UID not held: nobody reads it before this commit (written in place).
    write = _WRITERS.submit(encrypted_write, path, part10, unreferenced=held is None)
    cache = cache if cache is not None else IndexCache()

    def alone(display_check: bool = True) -> InstanceRecorded:
        return instance_stored(
            facility=facility,
            header=header,
            stored=stored,
            received_at=received_at,
            cache=cache,
            before_commit=write.result,
            made_by=made_by,
            # an AI result is kept with its study but is not an image of it (and needs the study here)
            derived=ai_facts is not None,
            display_check=display_check,
        )

    try:
        if group is not None and made_by is None and ai_facts is None:
            recorded = group.commit(
                GroupMember(
                    index=lambda: instance_index_in_group(
                        facility=facility, header=header, stored=stored, received_at=received_at, cache=cache
                    ),
                    before_commit=write.result,
                    alone=alone,
                    forget=lambda: _cache_forget(cache),
                    order=(header.study_instance_uid, header.series_instance_uid),
                )
            )
        else:
            recorded = alone()
        if ai_facts is not None:
            _ai_result_link(facility, ai_facts, recorded, received_at)
    except (OSError, StorageError) as exc:
        log.exception("could not store %s", header.sop_instance_uid)
        return ReceiveResult(OUT_OF_RESOURCES, header=header, reason=f"storage unavailable: {exc}")
    except StudyNotYetStored as exc:
        _written_discard(write, path)
        if ai_facts is not None:
            return _ai_result_wait(facility, part10, association_id, received_at, header)
        return _quarantine(
            facility, part10, association_id, received_at, str(exc), CONFLICT, header.sop_instance_uid
        )
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
    if recorded.study_created and ai_facts is None and made_by is None:
        _waiting_ai_results_link(facility, header.study_instance_uid)
        _waiting_ai_orus_release(facility, recorded.study_id)
        _waiting_history_link(recorded.study_id, header.accession_number)
    return ReceiveResult(SUCCESS, recorded=recorded, header=header)


def _cache_forget(cache: IndexCache) -> None:
    """A group rolled back: the studies and series it created are not in the database."""
    cache.studies.clear()
    cache.series.clear()


def _ai_result_wait(
    facility: Facility, part10: bytes, association_id, received_at: datetime, header: InstanceHeader
) -> ReceiveResult:
    """An AI result whose study no facility holds yet — the AI node was quicker than the modality's
    forward. It is kept (encrypted, with the quarantined objects, marked waiting) and answered
    Success: it is stored, and a failure status would only make the node resend or give up. The
    study's first image links it (``ai_objects_waiting_link``), or this object does, if the study
    was committed meanwhile by another association (the re-check below closes that race; the link
    itself is a compare-and-set, so the object is applied once)."""
    reason = (
        f"AI result for study {header.study_instance_uid}, not stored at {facility.code} yet: "
        "kept, linked when its images arrive"
    )
    result = _quarantine(
        facility,
        part10,
        association_id,
        received_at,
        reason,
        SUCCESS,
        header.sop_instance_uid,
        waiting_study_uid=header.study_instance_uid,
    )
    if result.ok:
        log.info("kept an AI result from %s until study %s arrives", facility.code, header.study_instance_uid)
        if Study.objects.filter(facility=facility, study_instance_uid=header.study_instance_uid).exists():
            _waiting_ai_results_link(facility, header.study_instance_uid)
    return ReceiveResult(result.status, header=header, reason=result.reason)


def _waiting_ai_results_link(facility: Facility, study_instance_uid: str) -> None:
    """The new study's images are stored: its waiting AI results are applied now. Their failure
    must not fail the image, which is stored already — it is logged and kept on the object."""
    try:
        ai_objects_waiting_link(facility=facility, study_instance_uid=study_instance_uid)
    except Exception:
        log.exception("could not link the AI results waiting for %s", study_instance_uid)


def _waiting_ai_orus_release(facility: Facility, study_id: int) -> None:
    """The AI ORUs kept for this study at this facility (by its UID, or the accession it took from
    its order) are applied now, by their senders' drains, after this commits."""
    try:
        study_uid, accession = Study.objects.values_list("study_instance_uid", "accession_number").get(
            pk=study_id
        )
        ai_orus_waiting_release(facility=facility, study_instance_uid=study_uid, accession_number=accession)
    except Exception:  # the image is stored already: a failure here is logged, the ORU keeps waiting
        log.exception("could not release the AI ORUs waiting for study %s", study_id)


def _waiting_history_link(study_id: int, accession_number: str) -> None:
    """The RIS's reports that came before this study (docs/priors.md, the late link) are linked to
    it; the images' own accession counts, as a retrieved prior keeps none of ours."""
    try:
        historical_reports_link(study=Study.objects.get(pk=study_id), accession_number=accession_number)
    except Exception:  # the image is stored already: the report stays listed by patient, unlinked
        log.exception("could not link the historical reports waiting for study %s", study_id)


def _duplicate_check(
    facility: Facility, header: InstanceHeader, part10: bytes, association_id, received_at, path: str
) -> ReceiveResult | None:
    """A SOP Instance UID we hold already (at ``path``): the same bytes are a resend (None:
    indexed as before, idempotent); other bytes are refused with 0xA900, the newcomer quarantined
    and audited, and the stored object left byte-identical — it is never overwritten in place."""
    try:
        kept = encrypted_read(path)
        # the same bytes, or the same image in another transfer syntax (issue #12: a re-send in
        # another syntax replaces the file and its row in one step), are not a conflict
        if kept == part10 or same_image(kept, part10):
            return None
    except (OSError, StorageError):
        log.exception("could not read the stored copy of %s to compare", header.sop_instance_uid)
        return ReceiveResult(OUT_OF_RESOURCES, header=header, reason="storage unavailable to compare")
    # the first 64 characters go back as the C-STORE Error Comment: the point before the UID
    reason = (
        f"SOP UID already stored with different content; refused, kept {header.sop_instance_uid} unchanged"
    )
    result = _quarantine(
        facility, part10, association_id, received_at, reason, DUPLICATE_CONFLICT, header.sop_instance_uid
    )
    if result.status == DUPLICATE_CONFLICT:
        _duplicate_audit(facility, header, reason)
    return ReceiveResult(result.status, header=header, reason=result.reason)


def _duplicate_audit(facility: Facility, header: InstanceHeader, reason: str) -> None:
    """The refusal on the kept object's row: who sent what is on the quarantine row."""
    instance = Instance.objects.get(sop_instance_uid=header.sop_instance_uid)
    audit_entry_write(
        instance,
        action=LogEntry.Action.ACCESS,
        text=header.sop_instance_uid,
        changes={"duplicate_refused": ["", reason]},
        extra={"facility": facility.pk, "duplicate_sop_instance_uid": header.sop_instance_uid},
    )


def _ai_result_link(
    facility: Facility, facts: AiResultFacts, recorded: InstanceRecorded, received_at: datetime
) -> None:
    """The stored SR/SEG/KOS becomes the study's AI result (routing's triage rules hear of it)."""
    ai_result_record(facility=facility, facts=facts, study_id=recorded.study_id, received_at=received_at)


def _written_discard(write: Future, path: str) -> None:
    """An object that was refused keeps only its quarantined copy: no file at the indexed path."""
    wait([write])
    if write.exception() is None:
        encrypted_delete(path)


def _quarantine(
    facility, part10, association_id, received_at, reason, status, sop_uid, waiting_study_uid: str = ""
) -> ReceiveResult:
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
            study_instance_uid=waiting_study_uid[:64],
            waiting_for_study=bool(waiting_study_uid),
        )
    except (OSError, StorageError, DatabaseError) as exc:
        log.exception("could not quarantine an object (%s)", reason)
        return ReceiveResult(OUT_OF_RESOURCES, reason=f"{reason}; quarantine unavailable: {exc}")
    if status != SUCCESS:  # (an AI result waiting for its study is kept, not refused)
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
        host=this_host(),
        process_id=os.getpid(),
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


PROCESS_DIED = "process died"


def this_host() -> str:
    """The name an association's row records as where it was served (the container's hostname in
    a container: a restarted container keeps it, a new one does not)."""
    return socket.gethostname()[:255]


def dicom_associations_of_process_close(*, process_id: int, host: str | None = None) -> int:
    """Close the associations a dead process left open (``ended_at`` empty: no process is left
    to close them), with the end reason "process died". The supervisor calls it when it reaps a
    child. Returns how many were closed."""
    return _associations_died(
        DicomAssociation.objects.filter(
            host=host or this_host(), process_id=process_id, kind=DicomAssociation.Kind.DIMSE
        )
    )


def dicom_associations_of_previous_run_close() -> int:
    """At an SCP's start-up: close this host's DICOM associations still open from a previous run
    (a process killed with SIGKILL, a machine that lost power). A row of a process that is still
    alive is left alone (another SCP on this host, e.g. on another port); one with this process's
    own id is a previous run's (a container's process 1 again), as this run has opened none yet."""
    ours = os.getpid()
    open_ = DicomAssociation.objects.filter(
        host=this_host(), kind=DicomAssociation.Kind.DIMSE, ended_at__isnull=True, process_id__isnull=False
    )
    gone = [pid for pid in set(open_.values_list("process_id", flat=True)) if pid == ours or not _alive(pid)]
    return _associations_died(open_.filter(process_id__in=gone)) if gone else 0


def _associations_died(associations) -> int:
    closed = associations.filter(ended_at__isnull=True).update(
        ended_at=timezone.now(), end_reason=PROCESS_DIED
    )
    if closed:
        log.warning("closed %d DICOM association(s) whose process died", closed)
    return closed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
