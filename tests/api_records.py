"""Two hospitals' records for the read-API tests (REST and FHIR), put in the way production gets them:
orders as real HL7 v2 text through the parser and the ingest service, studies indexed for them, signed
reports. Facility B's patient has the same MRN and name as facility A's, so a leak cannot hide.

Lakeshore (A, chicago, America/Chicago):
  * Jane QUINLAN, MRN1001^LAKESHORE, F, 1958-02-14 — A1001 code stroke (stat, NPI of the ordering
    provider, images complete), A1002 routine CT abdomen (final read, then an addendum), A1003
    cancelled (CA);
  * Peter NOVAK, MRN2002^2.16.840.1.113883.3.72 (an OID authority), M, 1970-06-01 — A2001 ASAP XR
    chest, in progress, no images yet.
Lakeview (B, lakeview, America/Chicago):
  * Jane QUINLAN, MRN1001^LAKEVIEW, F, 1958-02-14 — B1001 routine MR knee (final read), B1002.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime

from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from imaging.models import Order, Patient, Study, StudyStatus
from imaging.services import order_message_apply
from interfaces.hl7.parse import parse
from reports.models import Addendum, Report
from tests.hl7_data import orm

PETERS_AUTHORITY = "2.16.840.1.113883.3.72"  # an OID as PID-3.4
NPI_OF_WELBY = "1234567893"  # a valid NPI (check digit by the Luhn rule with prefix 80840)


def api_token(user) -> str:
    """A token the way a hospital gets one: ``manage.py drf_create_token USER``."""
    out = io.StringIO()
    call_command("drf_create_token", user.username, stdout=out)
    return out.getvalue().split()[2]  # "Generated token <key> for user <name>"


def token_client(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {api_token(user)}")


def session_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def order_text(
    *,
    accession: str,
    control: str = "NW",
    mrn: str = "MRN1001",
    authority: str = "LAKESHORE",
    family: str = "QUINLAN",
    given: str = "JANE",
    dob: str = "19580214",
    sex: str = "F",
    sender=("EPIC_RAD", "LAKESHORE"),
    ordered: str = "20261128031000",
    npi: bool = False,
    **orm_kwargs,
) -> str:
    """hl7_data.orm with the patient, the sender, the order time and the ordering provider's XCN
    given (ORC-12 / OBR-16: ``id^family^given^^^prefix^^^authority``)."""
    text = orm(control, accession=accession, mrn=mrn, sender=sender, **orm_kwargs)
    text = text.replace(
        f"{mrn}^^^LAKESHORE^MR||QUINLAN^JANE^M||19580214|F",
        f"{mrn}^^^{authority}^MR||{family}^{given}||{dob}|{sex}",
    )
    text = text.replace("||20261128031000|||", f"||{ordered}|||")
    if npi:
        text = text.replace("1234567^WELBY^MARCUS^^^DR", f"{NPI_OF_WELBY}^WELBY^MARCUS^^^DR^^^NPI")
    return text


def apply(facility, text: str) -> Order | None:
    outcomes = order_message_apply(facility=facility, message=parse(text.encode()).content)
    order_id = outcomes[0].order_id
    return Order.objects.get(pk=order_id) if order_id else None


def study_for(
    facility, accession: str, uid: str, *, started: datetime | None, status=StudyStatus.COMPLETE, instances=20
) -> Study:
    """A study indexed before its order arrives (the order links it by accession)."""
    return Study.objects.create(
        facility=facility,
        study_instance_uid=uid,
        accession_number=accession,
        modalities="CT",
        description="CT",
        study_datetime=started,
        status=status,
        number_of_series=1 if instances else 0,
        number_of_instances=instances,
        first_received_at=started,
    )


def final_report(study: Study, reader, text: str) -> Report:
    from tests.qa.conftest import signed_report

    report = signed_report(study, reader, text=text)
    Study.objects.filter(pk=study.pk).update(status=StudyStatus.FINAL)
    return report


@dataclass
class Records:
    jane_a: Patient
    peter_a: Patient
    jane_b: Patient
    stroke: Order  # A1001
    routine: Order  # A1002
    cancelled: Order  # A1003
    asap: Order  # A2001
    knee_b: Order  # B1001
    other_b: Order  # B1002
    stroke_study: Study
    routine_study: Study
    knee_study: Study
    routine_report: Report
    knee_report: Report

    @property
    def a_orders(self) -> list[Order]:
        return [self.stroke, self.routine, self.cancelled, self.asap]

    @property
    def b_orders(self) -> list[Order]:
        return [self.knee_b, self.other_b]


def build_records(chicago, lakeview, reader) -> Records:
    """``reader`` signs the reports (any radiologist; signing rules are tested elsewhere)."""
    chicago_time = chicago.zone
    stroke_study = study_for(
        chicago,
        "A1001",
        "1.2.826.0.1.3680043.10.501.1",
        started=datetime(2026, 11, 28, 3, 30, tzinfo=chicago_time),
    )
    routine_study = study_for(
        chicago,
        "A1002",
        "1.2.826.0.1.3680043.10.501.2",
        started=datetime(2026, 11, 27, 23, 30, tzinfo=chicago_time),
    )
    knee_study = study_for(
        lakeview, "B1001", "1.2.826.0.1.3680043.10.502.1", started=datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    )
    stroke = apply(
        chicago,
        order_text(
            accession="A1001", placer="P1001", filler="F1001", reason="CODE STROKE LKW 0200", npi=True
        ),
    )
    routine = apply(
        chicago,
        order_text(
            accession="A1002", placer="P1002", filler="F1002", code="74177", text="CT ABD PELVIS W CONTRAST",
            priority="R", reason="RLQ PAIN", patient_class="O", ordered="20261127220000",
        ),
    )  # fmt: skip
    cancelled = apply(chicago, order_text(accession="A1003", placer="P1003", filler="F1003", priority="R"))
    apply(chicago, order_text(control="CA", accession="A1003", placer="P1003", filler="F1003"))
    cancelled.refresh_from_db()
    asap = apply(
        chicago,
        order_text(
            accession="A2001", placer="P2001", filler="F2001", code="71046", text="XR CHEST 2 VIEWS",
            priority="A", reason="COUGH", patient_class="I", mrn="MRN2002", authority=PETERS_AUTHORITY,
            family="NOVAK", given="PETER", dob="19700601", sex="M",
        ),
    )  # fmt: skip
    lakeview_sender = ("RIS_LV", "LAKEVIEW")
    knee_b = apply(
        lakeview,
        order_text(
            accession="B1001", placer="P1001", filler="F1001", code="73721", text="MR KNEE WO CONTRAST",
            priority="R", reason="KNEE PAIN", patient_class="O", authority="LAKEVIEW", sender=lakeview_sender,
        ),
    )  # fmt: skip
    other_b = apply(
        lakeview,
        order_text(
            accession="B1002", placer="P1002", filler="F1002", priority="S", authority="LAKEVIEW",
            sender=lakeview_sender,
        ),
    )  # fmt: skip
    for study in (stroke_study, routine_study, knee_study):
        study.refresh_from_db()
    routine_report = final_report(routine_study, reader, "Appendicitis.")
    Addendum.objects.create(
        report=routine_report, sequence=1, text="Perforation seen on review.", author=reader,
        signed_at=timezone.now(), signature="0" * 64,
    )  # fmt: skip
    knee_report = final_report(knee_study, reader, "Medial meniscus tear.")
    return Records(
        jane_a=stroke.patient,
        peter_a=asap.patient,
        jane_b=knee_b.patient,
        stroke=stroke,
        routine=routine,
        cancelled=cancelled,
        asap=asap,
        knee_b=knee_b,
        other_b=other_b,
        stroke_study=stroke_study,
        routine_study=routine_study,
        knee_study=knee_study,
        routine_report=routine_report,
        knee_report=knee_report,
    )
