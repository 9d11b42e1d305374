"""The hospital's report history (docs/priors.md, "Historical reports from the RIS"): a facility's
RIS/EMR sends its earlier reports as ORU^R01, and each becomes a read-only ``HistoricalReport`` of the
patient at that facility, shown on the reading screen beside the reports ReadRoom signed.

* The patient is found by MRN **and** assigning authority in the facility's identity domain (the same
  ``patient_find`` as orders and images), never by name. A patient ReadRoom does not know yet is
  created from the PID (history is often loaded before the first order); a known patient's
  demographics are never changed by an old report.
* The text is written to the encrypted store, like a PACS report object or a credential document,
  and read on demand (``imaging.prior_reports.prior_documents``).
* One version per accession is shown. A corrected result (C), or a resend with another text,
  becomes the shown version; the one it replaces is kept with ``superseded_at`` and stays readable
  beside it, so nothing is changed silently. The same text again changes nothing. A final (F) after
  its own correction is refused: the corrected text stays shown."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from facilities.models import Facility
from imaging.facts import FhirReportFacts, HistoricalReportFacts, hl7_update
from imaging.models import HistoricalReport, Patient, Study
from imaging.services import IngestConflict, _aware, patient_find, patient_upsert
from imaging.storage import StoredFile, encrypted_delete, encrypted_read, encrypted_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistoryOutcome:
    report: HistoricalReport | None  # None: the same text was already shown, nothing stored
    note: str  # what the inbound message browser says was done


# A version may replace the shown one unless it goes back: a preliminary after the final (or its
# correction), or a final after its own correction (the corrected text stays).
_RANK = {"P": 0, "F": 1, "C": 2}


@transaction.atomic
def historical_report_record(*, facility: Facility, facts: HistoricalReportFacts) -> HistoryOutcome:
    patient = patient_find(facility=facility, identifier=facts.patient.identifier) or patient_upsert(
        facility=facility, facts=facts.patient
    )
    current = (
        HistoricalReport.objects.select_for_update()
        .filter(
            facility=facility, accession_number=facts.accession_number, superseded_at__isnull=True, fhir_id=""
        )
        .first()
    )
    if current is not None and current.patient_id != patient.pk:
        raise IngestConflict(
            f"accession {facts.accession_number} is already another patient's report at {facility.code}"
        )
    digest = hashlib.sha256(facts.text.encode()).hexdigest()
    same = current is not None and current.text_sha256 == digest
    if same and _RANK[facts.result_status] <= _RANK[current.result_status]:  # a resend, or F after C
        return HistoryOutcome(None, f"report {facts.accession_number}: same text as shown, nothing changed")
    if current is not None and _RANK[facts.result_status] < _RANK[current.result_status]:
        shown = {"C": "corrected", "F": "final"}[current.result_status]
        raise IngestConflict(
            f"a {HISTORY_WORD[facts.result_status]} result for {facts.accession_number} after its "
            f"{shown} one: the {shown} text stays"
        )
    now = timezone.now()
    stored = encrypted_write(f"history/{facility.pk}/{uuid.uuid4().hex}.txt", facts.text.encode())
    try:
        report = _version_add(
            current,
            stored,
            now,
            facility=facility,
            patient=patient,
            accession_number=facts.accession_number,
            study_instance_uid=facts.study_instance_uid or (current.study_instance_uid if current else ""),
            **_metadata(current, facts, facility),
            result_status=facts.result_status,
            source=facts.source,
            control_id=facts.control_id,
            text_sha256=digest,
        )
    except Exception:
        encrypted_delete(stored.relative_path)  # no text file without its row
        raise
    report.study = (current.study if current else None) or _study_of(report)
    if report.study is not None:
        report.save(update_fields=["study"])
    else:
        # its study's first image may be committing now, its link blind to this uncommitted row:
        # look once more after this commits (the link is a compare-and-set, so once either way)
        transaction.on_commit(lambda: _study_link_again(report.pk))
    verb = "corrected" if current is not None else "stored"
    word = HISTORY_WORD[facts.result_status]
    return HistoryOutcome(
        report, f"historical report {facts.accession_number} ({word}) {verb} (MRN {patient.mrn})"
    )


def _version_add(
    current: HistoricalReport | None, text: StoredFile, now: datetime, **fields
) -> HistoricalReport:
    """A report's new shown version (from the RIS or a FHIR source): the one it replaces is kept
    under it (``superseded_at``), the text is the encrypted file just written."""
    if current is not None:
        current.superseded_at = now
        current.save(update_fields=["superseded_at"])
    return HistoricalReport.objects.create(
        **fields,
        storage_path=text.relative_path,
        storage_key_id=text.key_id,
        received_at=now,
        supersedes=current,
    )


HISTORY_WORD = {"F": "final", "C": "corrected", "P": "preliminary", "A": "amended"}


def _metadata(current: HistoricalReport | None, facts: HistoricalReportFacts, facility: Facility) -> dict:
    """The version's procedure, times and reader by the HL7 update rule: what the message left empty
    is the shown version's (a correction often resends only the text), ``""`` deletes it."""
    fields = {
        "procedure_code": (facts.procedure_code, ""),
        "procedure_text": (facts.procedure_text, ""),
        "observed_at": (_local(facts.observed_at, facility), None),
        "reported_at": (_local(facts.reported_at, facility), None),
        "radiologist_name": (facts.radiologist_name, ""),
    }
    return {
        name: hl7_update(getattr(current, name) if current else cleared, value, cleared=cleared)
        for name, (value, cleared) in fields.items()
    }


def _local(value, facility: Facility):
    return _aware(value, facility) if isinstance(value, datetime) else value


def _study_of(report: HistoricalReport) -> Study | None:
    """The study this report is of, if ReadRoom holds it: by the Study Instance UID the RIS sent, else
    by accession — at the report's facility and of its patient only."""
    studies = Study.objects.filter(facility_id=report.facility_id, patient_id=report.patient_id)
    if not (report.study_instance_uid or report.accession_number):
        return None  # a FHIR report may name neither: never matched to a study without an accession
    if report.study_instance_uid:
        found = studies.filter(study_instance_uid=report.study_instance_uid).first()
        if found is not None:
            return found
    if not report.accession_number:
        return None
    return studies.filter(accession_number=report.accession_number).first()


def _study_link_again(report_id: int) -> None:
    report = HistoricalReport.objects.get(pk=report_id)
    study = _study_of(report)
    if study is not None:
        HistoricalReport.objects.filter(pk=report_id, study__isnull=True).update(study=study)


def historical_reports_link(*, study: Study, accession_number: str = "") -> int:
    """The late link (docs/priors.md): a study arrived — the current one, or a prior retrieved from
    the PACS, which keeps no accession of ours, so the caller passes the one its images carry. The
    facility's reports of the same patient that wait for it by Study Instance UID or accession are
    linked to it; a report of another patient with that accession is left alone (logged), and
    another facility's never matches. A compare-and-set on ``study IS NULL``: linked once."""
    if study.patient_id is None:
        return 0
    accessions = {a for a in (study.accession_number, accession_number) if a}
    match = Q(study_instance_uid=study.study_instance_uid)
    if accessions:
        # by accession only where the RIS sent no UID, or sent this one
        match |= Q(accession_number__in=accessions) & Q(study_instance_uid__in=["", study.study_instance_uid])
    waiting = HistoricalReport.objects.filter(match, facility_id=study.facility_id, study__isnull=True)
    others = waiting.exclude(patient_id=study.patient_id).count()
    if others:
        log.warning(
            "%s report(s) with study %s's accession or UID are another patient's: not linked",
            others,
            study.pk,
        )
    return waiting.filter(patient_id=study.patient_id).update(study=study)


def historical_report_text(report: HistoricalReport) -> str:
    return encrypted_read(report.storage_path).decode()


@dataclass(frozen=True)
class FhirOutcome:
    stored: int  # new rows (a first version, or one replacing the shown version)
    unchanged: int  # the same id and version (or the same text and status) as shown: nothing stored
    withdrawn: int  # shown versions the source now says are entered-in-error / cancelled: hidden
    # ids of the answer whose shown version still says its text could not be fetched (a text we
    # already hold for that version is kept, so a failed url then is no failure)
    pending: tuple[str, ...] = ()


def fhir_reports_record(
    *, facility: Facility, patient: Patient, source: str, reports: list[FhirReportFacts],
    withdrawn_ids: list[str] = (),
) -> FhirOutcome:  # fmt: skip
    """The reports a FHIR source gave for ``patient`` (docs/priors.md, "FHIR DiagnosticReport
    sources"), stored as read-only historical reports, all of them or none: the text files are
    written first and removed again when the transaction fails, so nothing is left half stored.

    Idempotent on the report's id and version: the same id and version again, or the same text
    and status under another version, stores nothing. Another text or status becomes the shown
    version and the one it replaces is kept under it (``superseded_at``), as for the RIS's
    corrections. A report the source now calls entered-in-error or cancelled is hidden (its row
    and text kept)."""
    written: list[str] = []
    try:
        with transaction.atomic():
            outcome = _fhir_reports_apply(facility, patient, source, reports, withdrawn_ids, written)
    except Exception:
        for path in written:
            encrypted_delete(path)  # no text file without its row
        raise
    return outcome


def _fhir_reports_apply(
    facility: Facility, patient: Patient, source: str, reports: list[FhirReportFacts],
    withdrawn_ids, written: list[str],
) -> FhirOutcome:  # fmt: skip
    now = timezone.now()
    shown = HistoricalReport.objects.select_for_update().filter(
        facility=facility, source=source, superseded_at__isnull=True
    )
    withdrawn = shown.filter(fhir_id__in=list(withdrawn_ids), patient=patient).update(superseded_at=now)
    stored = unchanged = 0
    # the shown version of each report the answer names, read (and locked) in one query
    currents = {r.fhir_id: r for r in shown.filter(fhir_id__in=[facts.fhir_id for facts in reports])}
    for facts in reports:
        current = currents.get(facts.fhir_id)
        if current is not None and current.patient_id != patient.pk:
            raise IngestConflict(f"DiagnosticReport/{facts.fhir_id} of {source} is another patient's")
        digest = hashlib.sha256(facts.text.encode()).hexdigest()
        held = (current.text_sha256, current.result_status) if current is not None else None
        same = held == (digest, facts.result_status)
        if same or (
            current is not None and not current.text_pending
            and facts.fhir_version and current.fhir_version == facts.fhir_version
        ):  # fmt: skip
            unchanged += 1  # (a version whose text we hold is kept even if its url failed this time)
            continue
        text = encrypted_write(f"history/{facility.pk}/{uuid.uuid4().hex}.txt", facts.text.encode())
        written.append(text.relative_path)
        if current is not None and current.text_pending:
            # the note "(the report's text could not be fetched …)" was no version of the report:
            # the text (or a newer note) takes its place; its file is removed after the commit
            _pending_replace(current, text, facts, digest, now)
            stored += 1
            continue
        report = currents[facts.fhir_id] = _version_add(
            current,
            text,
            now,
            facility=facility,
            patient=patient,
            accession_number=facts.accession_number,
            procedure_code=facts.procedure_code[:64],
            procedure_text=facts.procedure_text[:200],
            observed_at=facts.observed_at,
            reported_at=facts.reported_at,
            result_status=facts.result_status,
            radiologist_name=facts.radiologist_name[:200],
            source=source[:200],
            control_id=f"DiagnosticReport/{facts.fhir_id}/_history/{facts.fhir_version}"[:199],
            fhir_id=facts.fhir_id,
            fhir_version=facts.fhir_version[:64],
            text_pending=facts.text_pending,
            text_sha256=digest,
        )
        study = (current.study if current else None) or _study_of(report)
        if study is not None:
            HistoricalReport.objects.filter(pk=report.pk).update(study=study)
        stored += 1
    pending = tuple(r.fhir_id for r in currents.values() if r.text_pending)
    return FhirOutcome(stored, unchanged, withdrawn, pending)


def _pending_replace(
    report: HistoricalReport, text: StoredFile, facts: FhirReportFacts, digest: str, now: datetime
) -> None:
    old_path = report.storage_path
    report.storage_path, report.storage_key_id, report.text_sha256 = text.relative_path, text.key_id, digest
    report.text_pending, report.result_status = facts.text_pending, facts.result_status
    report.received_at = now
    report.fhir_version = facts.fhir_version[:64]
    report.control_id = f"DiagnosticReport/{facts.fhir_id}/_history/{facts.fhir_version}"[:199]
    report.save(
        update_fields=[
            "storage_path", "storage_key_id", "text_sha256", "text_pending", "result_status",
            "received_at", "fhir_version", "control_id",
        ]
    )  # fmt: skip
    transaction.on_commit(lambda: encrypted_delete(old_path))
