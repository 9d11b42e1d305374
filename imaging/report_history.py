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
import uuid
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from facilities.models import Facility
from imaging.facts import HistoricalReportFacts
from imaging.models import HistoricalReport, Study
from imaging.services import IngestConflict, _aware, patient_find, patient_upsert
from imaging.storage import encrypted_delete, encrypted_read, encrypted_write


@dataclass(frozen=True)
class HistoryOutcome:
    report: HistoricalReport | None  # None: the same text was already shown, nothing stored
    note: str  # what the inbound message browser says was done


@transaction.atomic
def historical_report_record(*, facility: Facility, facts: HistoricalReportFacts) -> HistoryOutcome:
    patient = patient_find(facility=facility, identifier=facts.patient.identifier) or patient_upsert(
        facility=facility, facts=facts.patient
    )
    current = (
        HistoricalReport.objects.select_for_update()
        .filter(facility=facility, accession_number=facts.accession_number, superseded_at__isnull=True)
        .first()
    )
    if current is not None and current.patient_id != patient.pk:
        raise IngestConflict(
            f"accession {facts.accession_number} is already another patient's report at {facility.code}"
        )
    digest = hashlib.sha256(facts.text.encode()).hexdigest()
    if current is not None and current.text_sha256 == digest:
        return HistoryOutcome(None, f"report {facts.accession_number}: same text as shown, nothing changed")
    if current is not None and current.result_status == "C" and facts.result_status == "F":
        raise IngestConflict(
            f"a final result for {facts.accession_number} after its correction: the corrected text stays"
        )
    now = timezone.now()
    stored = encrypted_write(f"history/{facility.pk}/{uuid.uuid4().hex}.txt", facts.text.encode())
    try:
        if current is not None:
            current.superseded_at = now
            current.save(update_fields=["superseded_at"])
        report = HistoricalReport.objects.create(
            facility=facility,
            patient=patient,
            study=Study.objects.filter(
                facility=facility, patient=patient, accession_number=facts.accession_number
            ).first(),
            accession_number=facts.accession_number,
            procedure_code=facts.procedure_code,
            procedure_text=facts.procedure_text,
            observed_at=_aware(facts.observed_at, facility),
            reported_at=_aware(facts.reported_at, facility),
            result_status=facts.result_status,
            radiologist_name=facts.radiologist_name,
            source=facts.source,
            control_id=facts.control_id,
            storage_path=stored.relative_path,
            storage_key_id=stored.key_id,
            text_sha256=digest,
            received_at=now,
            supersedes=current,
        )
    except Exception:
        encrypted_delete(stored.relative_path)  # no text file without its row
        raise
    verb = "corrected" if current is not None else "stored"
    return HistoryOutcome(report, f"historical report {facts.accession_number} {verb} (MRN {patient.mrn})")


def historical_report_text(report: HistoricalReport) -> str:
    return encrypted_read(report.storage_path).decode()
