"""A realistic report snapshot for the ORU tests: a code-stroke head CT at Lakeshore."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime

from interfaces.hl7.oru import OrderReference, PatientIdentity, Provider, ReportMessage, ResultStatus

SIGNED_AT = datetime(2025, 3, 1, 9, 29, 30, tzinfo=UTC)

FINDINGS = (
    "No intracranial hemorrhage.\n"
    "Hyperdense left MCA sign | no mass effect ^ midline shift 0 mm & ventricles normal ~ stable.\n"
    "\n"
    "Path C:\\PACS\\series 3 reviewed; ASPECTS 9 (M2 hypodensity) — Müller-Lyer ü."
)


def stroke_report(**changes) -> ReportMessage:
    report = ReportMessage(
        control_id="RR0000000000000001",
        sent_at=SIGNED_AT,
        receiving_application="EPIC_RAD",
        receiving_facility="LAKESHORE",
        patient=PatientIdentity(
            mrn="MRN-4711",
            assigning_authority="LAKESHORE",
            family_name="Quinlan",
            given_name="Jane",
            middle_name="A",
            birth_date=date(1951, 6, 30),
            sex="F",
        ),
        order=OrderReference(
            placer_number="PL-20250301-7",
            filler_number="FL-889",
            accession_number="ACC-STROKE-1",
            procedure_code="70450",
            procedure_text="CT HEAD WO CONTRAST",
            procedure_coding_system="C4",
            ordering_provider=Provider("ED-104", "Kildare", "James", prefix="Dr"),
        ),
        status=ResultStatus.FINAL,
        observed_at=datetime(2025, 3, 1, 9, 2, tzinfo=UTC),
        resulted_at=SIGNED_AT,
        interpreter=Provider("1234567893", "Neuro", "Nadia", prefix="Dr", degree="MD", id_authority="NPI"),
        sections=(
            ("Clinical history", "Code stroke: left facial droop, onset 08:40."),
            ("Technique", "Axial CT of the head without contrast."),
            ("Findings", FINDINGS),
            ("Impression", "1. No hemorrhage.\n2. Early left MCA infarct, ASPECTS 9."),
        ),
        critical=True,
        visit_number="V-55501",
        patient_class="E",
        timezone="America/Chicago",
    )
    return dataclasses.replace(report, **changes)
