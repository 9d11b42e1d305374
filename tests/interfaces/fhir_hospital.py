"""The hospital's FHIR server for tests/interfaces/test_priors_fhir.py (docs/priors.md, "FHIR
DiagnosticReport sources"): ReadRoom's own FHIR R4 API, in a uvicorn process of its own on a
database of its own, holding the hospital's signed reports. No third-party FHIR server installs here
(HAPI is a Maven application; nothing on PyPI or Debian; on npm the one standalone candidate,
``fhir-server``, depends on a package the registry does not have, and the others need MongoDB).

``seed()`` runs *inside* that process's database (``manage.py shell``, the server's environment):
the patient (MRN ``MRN``, the EHR's OID as issuer) with three reports in the lookback and one
older, a namesake (same name, another MRN), the same MRN under another hospital's OID, and an
operations user with an API token, which it prints as JSON for the test."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

EHR_OID = "2.16.840.1.113883.3.4242"  # the hospital EHR's MRN assigning authority
EHR_SYSTEM = f"urn:oid:{EHR_OID}"
OTHER_OID = "2.16.840.1.113883.3.9999"  # another hospital's, with the same MRN numbers
MRN = "MRN7001"
CHEST = "FINDINGS: 6 mm nodule in the right upper lobe.\nIMPRESSION: Follow-up CT in 6 months."
ABDOMEN = "Simple hepatic cyst, 12 mm."
ADDENDUM = "Compared with the outside ultrasound: unchanged."
KNEE = "Preliminary: no displaced fracture."
OLD = "ANCIENT REPORT outside the lookback."
NAMESAKE = "NAMESAKE REPORT of another patient with the same name."
ELSEWHERE = "OTHER ISSUER REPORT of the same MRN at another hospital."
ZONE = ZoneInfo("America/Chicago")


def seed() -> None:
    from django.utils import timezone

    from accounts.roles import Role
    from accounts.tokens import api_token_issue
    from facilities.models import Facility, FacilityKind
    from imaging.models import Order, Patient, Study
    from reports.models import Addendum, Report, ReportStatus
    from tests.conftest import make_radiologist, make_user
    from tests.qa.conftest import signed_report

    ehr = Facility.objects.create(
        code="LAKESHORE-EHR", name="Lakeshore EHR", state="IL", timezone="America/Chicago",
        kind=FacilityKind.LEVEL1_TRAUMA, patient_id_authority=EHR_OID,
    )  # fmt: skip
    elsewhere = Facility.objects.create(
        code="ST-ELSEWHERE", name="St Elsewhere", state="IL", timezone="America/Chicago",
        kind=FacilityKind.LEVEL1_TRAUMA, patient_id_authority=OTHER_OID,
    )  # fmt: skip
    reader = make_radiologist("dr_hale", "neuro")
    reader.display_name = "Martin Hale, MD"
    reader.save()
    n = iter(range(1, 100))

    def person(facility, mrn: str, authority: str) -> Patient:
        return Patient.objects.create(
            facility=facility, mrn=mrn, assigning_authority=authority, family_name="RIVERA", given_name="ANA"
        )

    def exam(patient, accession: str, code: str, text: str, when: datetime) -> Study:
        order = Order.objects.create(
            facility=patient.facility, patient=patient, accession_number=accession,
            procedure_code=code, procedure_text=text,
        )  # fmt: skip
        return Study.objects.create(
            facility=patient.facility, patient=patient, order=order, accession_number=accession,
            study_instance_uid=f"1.2.826.0.1.3680043.10.4242.{next(n)}", description=text,
            study_datetime=when, modalities=text[:2],
        )  # fmt: skip

    ana = person(ehr, MRN, EHR_OID)
    chest = signed_report(
        exam(ana, "H-CT-2025", "71250", "CT CHEST WO CONTRAST", datetime(2025, 3, 1, 10, 15, tzinfo=ZONE)),
        reader,
        CHEST,
    )
    abdomen = signed_report(
        exam(ana, "H-US-2024", "76700", "US ABDOMEN COMPLETE", datetime(2024, 6, 2, 9, 0, tzinfo=ZONE)),
        reader,
        ABDOMEN,
    )
    Addendum.objects.create(
        report=abdomen, sequence=1, text=ADDENDUM, author=reader, signed_at=timezone.now(),
        signature="0" * 64,
    )  # fmt: skip
    knee_study = exam(ana, "H-XR-2023", "73560", "XR KNEE 2 VIEWS", datetime(2023, 1, 5, 8, 0, tzinfo=ZONE))
    template_version = chest.template_version
    knee = Report.objects.create(
        study=knee_study, template_version=template_version, author=reader, status=ReportStatus.PRELIMINARY,
        values={"impression": KNEE}, signed_by=reader, signed_at=timezone.now(), signed_text=KNEE,
    )  # fmt: skip
    signed_report(
        exam(ana, "H-CT-2012", "71250", "CT CHEST WO CONTRAST", datetime(2012, 2, 1, 10, 0, tzinfo=ZONE)),
        reader,
        OLD,
    )
    signed_report(
        exam(
            person(ehr, "MRN7002", EHR_OID), "H-CT-7002", "71250", "CT CHEST WO CONTRAST",
            datetime(2025, 5, 1, 10, 0, tzinfo=ZONE),
        ),
        reader,
        NAMESAKE,
    )  # fmt: skip
    signed_report(
        exam(
            person(elsewhere, MRN, OTHER_OID), "E-CT-1", "71250", "CT CHEST WO CONTRAST",
            datetime(2025, 7, 1, 10, 0, tzinfo=ZONE),
        ),
        reader,
        ELSEWHERE,
    )  # fmt: skip
    interface = make_user("lakeshore_readroom", Role.OPERATIONS)  # the account ReadRoom's client uses
    print(
        json.dumps(
            {
                "token": api_token_issue(user=interface).key,
                "reports": {"chest": chest.pk, "abdomen": abdomen.pk, "knee": knee.pk},
                "patient": ana.pk,
            }
        )
    )


LATE_ADDENDUM = "Addendum: the nodule was also seen on the 2023 radiograph."


def addendum(report_id: int, text: str) -> None:
    """The hospital amends a report: an addendum signed there (its DiagnosticReport turns amended)."""
    from django.utils import timezone

    from reports.models import Addendum, Report

    report = Report.objects.get(pk=report_id)
    Addendum.objects.create(
        report=report, sequence=report.addenda.count() + 1, text=text, author=report.signed_by,
        signed_at=timezone.now(), signature="0" * 64,
    )  # fmt: skip
