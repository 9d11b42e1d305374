"""AI results: link what an algorithm said about a study to that study, once (docs/ai.md).

The edge (``interfaces.dicom.ai_objects`` for SR/SEG/KOS, ``interfaces.hl7.parse`` for an ORU) reads
the result into ``AiResultFacts``; this records it. A result links to a study **of its own facility**
only — by Study Instance UID, else by accession — so a facility-B result can never touch a facility-A
study. Routing hears of it after commit (``imaging.signals.ai_result_recorded``)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from facilities.models import Facility
from imaging.facts import AiResultFacts
from imaging.models import AiFinding, AiResult, Study
from imaging.services import StudyNotYetStored
from imaging.signals import ai_result_recorded


class AiStudyNotStored(StudyNotYetStored):
    """No study of this facility is the one the result names (yet): the AI node was quicker than the
    modality. The HL7 edge keeps such an ORU waiting for its study (docs/ai.md)."""

    def __init__(self, message: str, *, study_instance_uid: str, accession_number: str) -> None:
        super().__init__(message)
        self.study_instance_uid = study_instance_uid
        self.accession_number = accession_number


def ai_study_for(facility: Facility, facts: AiResultFacts) -> Study:
    """The study the result is about, at this facility; AiStudyNotStored when there is none here."""
    studies = Study.objects.filter(facility=facility)
    study = None
    if facts.study_instance_uid:
        study = studies.filter(study_instance_uid=facts.study_instance_uid).first()
    if study is None and facts.accession_number:
        study = studies.filter(accession_number=facts.accession_number).first()
    if study is None:
        what = facts.study_instance_uid or f"accession {facts.accession_number or '(none)'}"
        raise AiStudyNotStored(
            f"AI result for a study not stored at {facility.code}: {what}",
            study_instance_uid=facts.study_instance_uid,
            accession_number=facts.accession_number,
        )
    return study


@transaction.atomic
def ai_result_record(
    *,
    facility: Facility,
    facts: AiResultFacts,
    study_id: int | None = None,
    received_at: datetime | None = None,
) -> AiResult:
    """Record the result (idempotent on the object's SOP Instance UID / the ORU's control id) and
    announce it after commit. ``study_id``: already linked (the SR was indexed into its study)."""
    study = (
        Study.objects.get(pk=study_id, facility=facility)
        if study_id is not None
        else ai_study_for(facility, facts)
    )
    if facts.sop_instance_uid:
        existing = AiResult.objects.filter(
            study=study, source=facts.source, sop_instance_uid=facts.sop_instance_uid
        ).first()
        if existing is not None:
            return existing  # resent: recorded already, announced already
    result = AiResult.objects.create(
        facility=facility,
        study=study,
        source=facts.source,
        sop_instance_uid=facts.sop_instance_uid[:200],
        manufacturer=facts.manufacturer[:64],
        model=facts.model[:64],
        version=facts.version[:64],
        referenced_sop_instance_uids=list(facts.referenced_sop_instance_uids),
        received_at=received_at or timezone.now(),
    )
    AiFinding.objects.bulk_create(
        AiFinding(
            result=result,
            code_value=f.code_value[:64],
            coding_scheme=f.coding_scheme[:32],
            meaning=f.meaning[:200],
            present=f.present,
            probability=f.probability,
            referenced_sop_instance_uids=list(f.referenced_sop_instance_uids),
        )
        for f in facts.findings
    )
    badge = ai_badge_text(result.algorithm, facts)
    if badge:
        Study.objects.filter(pk=study.pk).update(ai_badge=badge[:200])
    result_id = result.pk
    transaction.on_commit(lambda: ai_result_recorded.send(sender=AiResult, result_id=result_id), robust=True)
    return result


def ai_badge_text(algorithm: str, facts: AiResultFacts) -> str:
    """ "Cerebral hemorrhage p=0.93 · Aidoc BriefCase ICH 2.1"; "" when nothing is positive."""
    positive = [
        f.meaning + (f" p={f.probability:.2f}" if f.probability is not None else "")
        for f in facts.findings
        if f.present
    ]
    return f"{', '.join(positive)} · {algorithm}" if positive else ""
