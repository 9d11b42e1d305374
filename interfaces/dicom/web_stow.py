"""STOW-RS (PS3.18 §10.5): each part of the request goes through the one receive path
(``interfaces.dicom.receive.dicom_instance_receive``) exactly as a C-STORE would — encrypted,
indexed, idempotent on SOP Instance UID, quarantined when undecodable — and the request is recorded
as a DicomAssociation of kind "stow"."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from facilities.models import Facility
from imaging.services import IndexCache
from interfaces.dicom import web_access as access
from interfaces.dicom.header import UndecodableDataset, dataset_read, instance_header_read
from interfaces.dicom.receive import dicom_association_close, dicom_association_open, dicom_instance_receive
from interfaces.dicom.web_json import StoreOutcome
from interfaces.dicom.web_multipart import MultipartError, Part
from interfaces.models import DicomAssociation

log = logging.getLogger(__name__)

# The instance belongs to another study than the request URL names (PS3.18 §10.5.1: every
# instance of a request to /studies/{study} must be of that study). A9xx is the C-STORE range for
# "data set does not match" (PS3.4 B.2.3); A901 is the code Azure's DICOM service uses for it too.
STUDY_UID_MISMATCH = 0xA901

PREAMBLE = b"\x00" * 128
DICM = b"DICM"


def part10_with_preamble(body: bytes) -> bytes:
    """A STOW part as a conformant Part 10 file. ``dicomweb-client`` (``pydicom.dcmwrite`` of a
    dataset built in memory, which has no ``preamble``) sends the File Meta Information group with
    neither the 128-byte preamble nor ``DICM``; the preamble carries nothing (PS3.10 §7.1), so it is
    added, and the file that is stored and served back is a Part 10 file like any C-STORE'd one. A
    body without File Meta Information is left as it is: the receive path quarantines it and says why."""
    if body[128:132] == DICM:
        return body
    if body[:2] == b"\x02\x00":  # group 0002, always Explicit VR Little Endian (PS3.10 §7.1)
        return PREAMBLE + DICM + body
    return body


@dataclass(frozen=True)
class StowResult:
    outcomes: list[StoreOutcome]
    syntax_error: str = ""  # the body broke off after these parts

    @property
    def study_uids(self) -> set[str]:
        return {o.study_uid for o in self.outcomes if o.stored}


def stow_request_store(
    *,
    facility: Facility,
    parts: Iterable[Part],
    study_uid: str | None,
    peer: str,
    instance_url: Callable[[str, str, str], str],
) -> StowResult:
    """Store every part; one DicomAssociation row for the request, closed with its counts."""
    association = dicom_association_open(kind=DicomAssociation.Kind.STOW, facility=facility, peer=peer)
    outcomes: list[StoreOutcome] = []
    syntax_error = ""
    cache = IndexCache()  # a request usually carries one series: look its study and series up once
    try:
        for part in parts:
            outcomes.append(_part_store(facility, part, study_uid, association.pk, instance_url, cache))
    except MultipartError as exc:
        syntax_error = str(exc)
    finally:
        stored = sum(o.stored for o in outcomes)
        dicom_association_close(association_id=association.pk, stored=stored, failed=len(outcomes) - stored)
    log.info(
        "STOW-RS from %s into %s: %d stored, %d failed%s",
        peer,
        facility.code,
        sum(o.stored for o in outcomes),
        sum(not o.stored for o in outcomes),
        f" ({syntax_error})" if syntax_error else "",
    )
    return StowResult(outcomes, syntax_error)


def _part_store(
    facility: Facility,
    part: Part,
    study_uid: str | None,
    association_id: int,
    instance_url: Callable[[str, str, str], str],
    cache: IndexCache,
) -> StoreOutcome:
    body = part10_with_preamble(part.body)
    dataset = None
    if study_uid:
        try:
            dataset = dataset_read(body)
            header = instance_header_read(dataset)
        except UndecodableDataset:
            header = None  # the receive path quarantines it and says why
        if header is not None and header.study_instance_uid != study_uid:
            return StoreOutcome(
                header.sop_class_uid,
                header.sop_instance_uid,
                STUDY_UID_MISMATCH,
                reason=f"instance of study {header.study_instance_uid}, not of {study_uid}",
            )
    result = dicom_instance_receive(
        facility=facility, part10=body, association_id=association_id, cache=cache, dataset=dataset
    )
    header = result.header
    if header is None:
        return StoreOutcome("", "", result.status, reason=result.reason)
    return StoreOutcome(
        header.sop_class_uid,
        header.sop_instance_uid,
        result.status,
        retrieve_url=instance_url(
            header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid
        )
        if result.ok
        else "",
        reason=result.reason,
        study_uid=header.study_instance_uid,
    )


def stow_reader_store(
    *,
    user,
    parts: Iterable[Part],
    study_uid: str | None,
    peer: str,
    instance_url: Callable[[str, str, str], str],
) -> StowResult:
    """A reader's save from the viewer (OHIF's "Create SR"): each part must be an SR or key-object
    selection of a study the reader may read now (``web_access.reader_stow_study``); it is stored
    through the one receive path as a *derived* object — kept with the study, never counted as its
    images, never a reason to route or complete it again."""
    association = dicom_association_open(kind=DicomAssociation.Kind.STOW, facility=None, peer=peer)
    outcomes: list[StoreOutcome] = []
    syntax_error = ""
    cache = IndexCache()
    try:
        for part in parts:
            outcomes.append(_reader_part_store(user, part, study_uid, association.pk, instance_url, cache))
    except MultipartError as exc:
        syntax_error = str(exc)
    finally:
        stored = sum(o.stored for o in outcomes)
        dicom_association_close(association_id=association.pk, stored=stored, failed=len(outcomes) - stored)
    failed = len(outcomes) - stored
    log.info("STOW-RS by reader %s from %s: %d stored, %d failed", user.pk, peer, stored, failed)
    return StowResult(outcomes, syntax_error)


def _reader_part_store(
    user,
    part: Part,
    study_uid: str | None,
    association_id: int,
    instance_url: Callable[[str, str, str], str],
    cache: IndexCache,
) -> StoreOutcome:
    body = part10_with_preamble(part.body)
    try:
        dataset = dataset_read(body)
        header = instance_header_read(dataset)
    except UndecodableDataset as exc:
        return StoreOutcome("", "", 0xC000, reason=f"not a readable DICOM object: {exc}")
    if study_uid and header.study_instance_uid != study_uid:
        return StoreOutcome(
            header.sop_class_uid,
            header.sop_instance_uid,
            STUDY_UID_MISMATCH,
            reason=f"instance of study {header.study_instance_uid}, not of {study_uid}",
        )
    try:
        study = access.reader_stow_study(user, header.study_instance_uid, header.sop_class_uid)
    except access.StoreRefused as refusal:
        return StoreOutcome(
            header.sop_class_uid, header.sop_instance_uid, refusal.status, reason=refusal.message
        )
    result = dicom_instance_receive(
        facility=study.facility,
        part10=body,
        association_id=association_id,
        cache=cache,
        made_by=user,
        dataset=dataset,
    )
    url = instance_url(header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid)
    return StoreOutcome(
        header.sop_class_uid,
        header.sop_instance_uid,
        result.status,
        retrieve_url=url if result.ok else "",
        reason=result.reason,
        study_uid=header.study_instance_uid,
    )
