"""Operations' decisions on quarantined DICOM objects: release (ingest again, once the cause — an
unknown order, a conflicting study — is fixed) or discard. Either needs a reason and leaves the
encrypted copy in place; a refused release says why and leaves the object in quarantine.

An AI result kept because its study had not arrived (``waiting_for_study``) is released by the
study itself: ``ai_objects_waiting_link`` when the study's first image is stored."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from imaging.storage import encrypted_read
from interfaces.models import QuarantinedObject

log = logging.getLogger(__name__)


class QuarantineRefused(ValueError):
    pass


def _claim(object_id: int, reason: str) -> QuarantinedObject:
    if not (reason or "").strip():
        raise QuarantineRefused("Give a reason.")
    quarantined = QuarantinedObject.objects.select_related("facility").get(pk=object_id)
    if quarantined.resolved_at is not None:
        raise QuarantineRefused(f"Already {quarantined.resolution or 'resolved'}.")
    if quarantined.facility is None:
        raise QuarantineRefused("No facility claims its sender: it cannot be filed anywhere.")
    return quarantined


def _resolve(object_id: int, resolution: str, by, reason: str) -> bool:
    """Compare-and-set: only the first decision on an object counts."""
    return bool(
        QuarantinedObject.objects.filter(pk=object_id, resolved_at__isnull=True).update(
            resolved_at=timezone.now(),
            resolution=resolution,
            resolved_by=by,
            resolution_reason=reason.strip(),
        )
    )


def quarantine_release(*, object_id: int, by, reason: str) -> str:
    """Ingest the kept bytes again, as if just received; the answer is what happened."""
    from interfaces.dicom.receive import dicom_instance_receive

    quarantined = _claim(object_id, reason)
    part10 = encrypted_read(quarantined.storage_path)
    with transaction.atomic():
        result = dicom_instance_receive(
            facility=quarantined.facility,
            part10=part10,
            association_id=quarantined.association_id,
            received_at=quarantined.received_at,
            sop_instance_uid_hint=quarantined.sop_instance_uid,
        )
        if not result.ok:
            # refused again: raising rolls back the second quarantine row it wrote; the original stays
            raise QuarantineRefused(f"Still refused: {result.reason}")
        _resolve(object_id, "released", by, reason)
    return "released into the archive"


def quarantine_discard(*, object_id: int, by, reason: str) -> None:
    _claim(object_id, reason)
    if not _resolve(object_id, "discarded", by, reason):
        raise QuarantineRefused("Someone decided on it meanwhile.")


def ai_objects_waiting_link(*, facility, study_instance_uid: str) -> int:
    """Ingest the AI results kept for this study before it arrived — at its own facility only, so a
    facility-B result never reaches a facility-A study — as if just received: indexed with the study,
    linked, and the triage rules applied (``imaging.ai``). Each is linked once: the claim is a
    compare-and-set, as the study's first image and the result's own re-check may both try. Returns
    how many were linked; one that is refused now keeps its copy here, no longer waiting, with why."""
    from interfaces.dicom.receive import dicom_instance_receive

    waiting = QuarantinedObject.objects.filter(
        facility=facility,
        study_instance_uid=study_instance_uid,
        waiting_for_study=True,
        resolved_at__isnull=True,
    ).order_by("received_at", "pk")
    linked = 0
    for kept in waiting:
        try:
            with transaction.atomic():
                if not _resolve(kept.pk, "linked", None, "its study arrived"):
                    continue  # linked meanwhile by the other side of the race
                result = dicom_instance_receive(
                    facility=facility,
                    part10=encrypted_read(kept.storage_path),
                    association_id=kept.association_id,
                    received_at=kept.received_at,
                    sop_instance_uid_hint=kept.sop_instance_uid,
                )
                if not result.ok:
                    raise QuarantineRefused(result.reason)  # rolls back the claim and any new row
            linked += 1
        except QuarantineRefused as refusal:
            log.warning("AI result %s not linked to its study: %s", kept.sop_instance_uid, refusal)
            QuarantinedObject.objects.filter(pk=kept.pk, resolved_at__isnull=True).update(
                waiting_for_study=False, reason=f"{kept.reason}; its study arrived, refused then: {refusal}"
            )
    return linked
