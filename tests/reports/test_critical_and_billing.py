"""Critical results (ACR practice parameter) and billing charges on final reads."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from reports.models import Charge, ChargeKind, CommunicationMethod, Report, ReportStatus
from reports.services import (
    ChargeCorrectionRefused,
    ReportError,
    SigningRefused,
    addendum_sign,
    charge_correct,
    charge_for_final_read,
    critical_communication_record,
    critical_results_escalate,
    report_critical_mark,
    report_draft_save,
    report_sign,
    report_start,
)
from tests.conftest import PASSWORD
from tests.reports.conftest import FILLED
from tests.worklist.conftest import Screens
from worklist.groups import OPERATIONS_GROUP, user_group

pytestmark = pytest.mark.django_db


@pytest.fixture
def filled_report(claimed_head_ct, neuro_reader) -> Report:
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    return report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())


def _communicate(report, user, **extra):
    fields = {
        "person_notified": "Dr Kim Lee",
        "role": "ED attending",
        "method": CommunicationMethod.PHONE,
        "communicated_at": timezone.now() - timedelta(minutes=2),
        "read_back_confirmed": True,
        **extra,
    }
    return critical_communication_record(report_id=report.pk, user=user, at=timezone.now(), **fields)


# --- critical results ----------------------------------------------------------------------------------


def test_a_critical_report_is_final_only_with_a_communication_record(filled_report, neuro_reader):
    # given the report is marked critical
    report_critical_mark(report_id=filled_report.pk, user=neuro_reader, critical=True, at=timezone.now())
    # when signed without a communication record, it is refused with what to do
    with pytest.raises(SigningRefused) as refused:
        report_sign(
            report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True
        )
    assert any("Critical result" in p for p in refused.value.problems)
    # when the communication is recorded with read-back, signing succeeds
    record = _communicate(filled_report, neuro_reader)
    report = report_sign(
        report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True
    )
    assert report.status == ReportStatus.FINAL and list(report.communications.all()) == [record]


def test_a_communication_without_read_back_or_person_is_refused(filled_report, neuro_reader):
    with pytest.raises(ReportError) as refused:
        _communicate(
            filled_report, neuro_reader, read_back_confirmed=False, person_notified=" ", method="fax"
        )
    assert len(refused.value.problems) == 3
    assert any("Read-back" in p for p in refused.value.problems)
    # the database refuses it too
    from reports.models import CriticalResultCommunication

    with pytest.raises(IntegrityError), transaction.atomic():
        CriticalResultCommunication.objects.create(
            report=filled_report,
            person_notified="x",
            role="y",
            method="phone",
            communicated_at=timezone.now(),
            read_back_confirmed=False,
            recorded_by=neuro_reader,
        )


def test_an_open_critical_result_past_the_deadline_escalates_to_operations_once(
    filled_report, neuro_reader, chicago, django_capture_on_commit_callbacks
):
    # given a report marked critical 61 minutes ago at a facility with the default 60-minute deadline
    reader_group = user_group(neuro_reader.pk)
    screens = Screens([OPERATIONS_GROUP, reader_group])
    marked = timezone.now() - timedelta(minutes=61)
    report_critical_mark(report_id=filled_report.pk, user=neuro_reader, critical=True, at=marked)
    # when the sweep runs at 59 minutes nothing happens; after 60 it escalates; again, nothing more
    assert critical_results_escalate(now=marked + timedelta(minutes=59)) == []
    with django_capture_on_commit_callbacks(execute=True):
        first = critical_results_escalate(now=timezone.now())
        second = critical_results_escalate(now=timezone.now())
    assert [e.report_id for e in first] == [filled_report.pk] and second == []
    received = screens.received()
    events = received[OPERATIONS_GROUP]
    assert [(e["type"], e["report"], e["accession"]) for e in events] == [
        ("report.critical_overdue", filled_report.pk, filled_report.study.accession_number)
    ]
    assert filled_report.study.patient.family_name not in str(events)  # metadata only
    # and the reader who marked it, on their own pages (issue 14): a notice with the way back to it
    [told] = [e["notice"] for e in received[reader_group] if e["type"] == "notice"]
    assert told["kind"] == "critical_overdue" and told["url"] == f"/studies/{filled_report.study_id}/report/"
    assert filled_report.study.accession_number in told["text"]
    assert filled_report.study.patient.family_name not in str(told)
    assert Report.objects.get(pk=filled_report.pk).critical_escalated_at is not None


def test_a_communicated_critical_result_does_not_escalate(filled_report, neuro_reader):
    report_critical_mark(
        report_id=filled_report.pk, user=neuro_reader, critical=True, at=timezone.now() - timedelta(hours=2)
    )
    _communicate(filled_report, neuro_reader)
    assert critical_results_escalate(now=timezone.now()) == []


# --- billing ---------------------------------------------------------------------------------------------


def test_a_final_read_creates_exactly_one_charge(filled_report, neuro_reader, claimed_head_ct):
    # when the report is signed final and then addended
    report = report_sign(
        report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True
    )
    addendum_sign(
        report_id=report.pk, user=neuro_reader, text="Addendum.", secret=PASSWORD, at=timezone.now()
    )
    charge_for_final_read(report=Report.objects.get(pk=report.pk))  # a retry
    # then there is one charge with the facility's rate, the procedure code and the routed RVU
    charge = Charge.objects.get()
    assert (charge.facility_id, charge.study_id, charge.report_id) == (
        claimed_head_ct.facility_id,
        claimed_head_ct.pk,
        report.pk,
    )
    assert (charge.procedure_code, charge.rvu, charge.rate, charge.amount) == (
        "70450",
        Decimal("1.50"),
        Decimal("42.00"),
        Decimal("42.00"),
    )
    assert (charge.radiologist, charge.signed_at) == (neuro_reader, report.signed_at)
    # and the database refuses a second charge for the study
    with pytest.raises(IntegrityError), transaction.atomic():
        Charge.objects.create(
            facility_id=charge.facility_id,
            study_id=charge.study_id,
            report_id=charge.report_id,
            rate=1,
            amount=1,
            radiologist=neuro_reader,
            signed_at=timezone.now(),
            posted_at=timezone.now(),
        )


def test_a_preliminary_read_is_not_billed(filled_report, neuro_reader, chicago):
    chicago.accepts_preliminary = True
    chicago.save()
    report_sign(
        report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=False
    )
    assert not Charge.objects.exists()


def test_the_monthly_csv_for_operations_and_the_facilitys_admin(
    filled_report, neuro_reader, client, ops_omar, admin_chicago, admin_lakeview, mso_mary, chicago
):
    report = report_sign(
        report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True
    )
    month = report.signed_at.astimezone(chicago.zone).strftime("%Y-%m")
    url = f"/reports/charges/{chicago.code}/{month}.csv"
    # operations downloads it
    client.force_login(ops_omar)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == [
        "signed_at_local",
        "accession",
        "procedure_code",
        "rvu",
        "rate",
        "amount",
        "radiologist",
        "radiologist_npi",
        "charge_id",
        "kind",
        "corrects_charge_id",
        "reason",
        "posted_at_local",
    ]
    charge = Charge.objects.get()
    assert rows[1][1:] == [
        report.study.accession_number,
        "70450",
        "1.50",
        "42.00",
        "42.00",
        str(neuro_reader),
        "1649251780",
        str(charge.pk),
        "charge",
        "",
        "",
        rows[1][0],
    ]
    # ISO 8601 with the facility's offset (issue 19): unambiguous in a spreadsheet
    assert rows[1][0] == report.signed_at.astimezone(chicago.zone).isoformat(timespec="seconds")
    assert rows[1][0].endswith(("-06:00", "-05:00"))
    # the previous month is empty
    client.get(f"/reports/charges/{chicago.code}/2020-01.csv")
    assert (
        len(
            list(
                csv.reader(
                    io.StringIO(client.get(f"/reports/charges/{chicago.code}/2020-01.csv").content.decode())
                )
            )
        )
        == 1
    )
    # Chicago's admin may, Lakeview's admin and the MSO may not (404, as for a missing facility)
    client.force_login(admin_chicago)
    assert client.get(url).status_code == 200
    for outsider in (admin_lakeview, mso_mary):
        client.force_login(outsider)
        assert client.get(url).status_code == 404
    client.force_login(ops_omar)
    assert client.get(f"/reports/charges/{chicago.code}/2026-13.csv").status_code == 400


def test_the_charges_api(
    filled_report, neuro_reader, client, ops_omar, admin_lakeview, chicago, verified_client
):
    report = report_sign(
        report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True
    )
    month = report.signed_at.astimezone(chicago.zone).strftime("%Y-%m")
    url = f"/api/v1/reports/charges/?facility={chicago.code}&month={month}"
    client.force_login(ops_omar)
    body = client.get(url).json()
    assert [(c["accession"], c["amount"], c["procedure_code"]) for c in body] == [
        (report.study.accession_number, "42.00", "70450")
    ]
    assert client.get(f"/api/v1/reports/charges/?facility={chicago.code}&month=March").status_code == 400
    client.force_login(admin_lakeview)
    assert client.get(url).status_code == 404
    # a radiologist does not see the facility's billing
    assert verified_client(neuro_reader).get(url).status_code == 404


def test_the_pdf_writes_times_in_the_facilitys_zone_with_its_abbreviation(
    filled_report, neuro_reader, chicago
):
    from pypdf import PdfReader

    from facilities.times import time_text
    from reports.pdf import report_pdf

    report = report_sign(
        report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True
    )
    text = " ".join(
        p.extract_text() for p in PdfReader(io.BytesIO(report_pdf(report=report, at=report.signed_at))).pages
    )
    signed = time_text(report.signed_at, chicago.zone)  # e.g. "2026-12-02 02:31 CST", not UTC
    assert f"on {signed}" in " ".join(text.split())
    assert signed.endswith(("CST", "CDT"))


# --- charges are append-only; corrections are rows of their own (issue 15) --------------------------


@pytest.fixture
def billed(filled_report, neuro_reader) -> Charge:
    report_sign(report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True)
    return Charge.objects.get()


def _raw(sql: str, params: list) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.mark.parametrize("assignment", ["amount = 0", "rate = rate", "reason = 'tampered'"])
def test_a_charge_cannot_be_updated_in_the_database(billed, assignment):
    with pytest.raises(DatabaseError, match="billed"):
        _raw(f"UPDATE reports_charge SET {assignment} WHERE id = %s", [billed.pk])  # noqa: S608
    billed.amount = Decimal("0")
    with pytest.raises(DatabaseError, match="billed"), transaction.atomic():
        billed.save()
    assert Charge.objects.get(pk=billed.pk).amount == Decimal("42.00")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite refuses UPDATE only (reports.setup)")
def test_a_charge_cannot_be_deleted_on_postgresql(billed):
    with pytest.raises(DatabaseError, match="billed"):
        _raw("DELETE FROM reports_charge WHERE id = %s", [billed.pk])
    assert Charge.objects.filter(pk=billed.pk).exists()


def test_a_correction_reverses_the_charge_and_posts_the_right_one(
    billed, ops_omar, neuro_reader, client, chicago
):
    posted = timezone.now()
    reversal, correction = charge_correct(
        charge_id=billed.pk,
        by=ops_omar,
        reason="Contract rate for CT head is 30.00",
        rate=Decimal("30.00"),
        at=posted,
    )
    # the original is untouched; two new rows reference it, with the reason and who posted them
    original = Charge.objects.get(pk=billed.pk)
    assert (original.kind, original.amount, original.corrects_id) == (
        ChargeKind.CHARGE,
        Decimal("42.00"),
        None,
    )
    assert (reversal.kind, reversal.amount, reversal.rate, reversal.rvu) == (
        ChargeKind.REVERSAL,
        Decimal("-42.00"),
        Decimal("-42.00"),
        Decimal("-1.50"),
    )
    assert (correction.kind, correction.amount, correction.rate, correction.rvu) == (
        ChargeKind.CORRECTION,
        Decimal("30.00"),
        Decimal("30.00"),
        Decimal("1.50"),
    )
    for row in (reversal, correction):
        assert (row.corrects_id, row.posted_by, row.reason, row.study_id) == (
            billed.pk,
            ops_omar,
            "Contract rate for CT head is 30.00",
            billed.study_id,
        )
        assert row.signed_at == billed.signed_at and row.posted_at == posted
    # the study now costs the corrected amount
    assert sum(c.amount for c in Charge.objects.filter(study_id=billed.study_id)) == Decimal("30.00")
    # the CSV and the API of the month show the three rows in posting order
    month = posted.astimezone(chicago.zone).strftime("%Y-%m")
    client.force_login(ops_omar)
    rows = list(
        csv.reader(io.StringIO(client.get(f"/reports/charges/{chicago.code}/{month}.csv").content.decode()))
    )
    header = rows[0]
    lines = [dict(zip(header, row, strict=True)) for row in rows[1:]]
    assert [(r["kind"], r["amount"], r["corrects_charge_id"]) for r in lines] == [
        ("charge", "42.00", ""),
        ("reversal", "-42.00", str(billed.pk)),
        ("correction", "30.00", str(billed.pk)),
    ]
    assert lines[2]["reason"] == "Contract rate for CT head is 30.00"
    body = client.get(f"/api/v1/reports/charges/?facility={chicago.code}&month={month}").json()
    assert [(c["kind"], c["amount"], c["corrects"], c["posted_by"]) for c in body] == [
        ("charge", "42.00", None, None),
        ("reversal", "-42.00", billed.pk, str(ops_omar)),
        ("correction", "30.00", billed.pk, str(ops_omar)),
    ]
    # the original cannot be corrected twice (correct the latest row), a reversal never
    with pytest.raises(ChargeCorrectionRefused, match="already corrected"):
        charge_correct(charge_id=billed.pk, by=ops_omar, reason="again", at=posted, rate=Decimal("1"))
    with pytest.raises(ChargeCorrectionRefused, match="reversal"):
        charge_correct(charge_id=reversal.pk, by=ops_omar, reason="again", at=posted)
    # the correction itself can be voided: the study then costs nothing
    charge_correct(
        charge_id=correction.pk, by=ops_omar, reason="Read was a duplicate order", void=True, at=posted
    )
    assert sum(c.amount for c in Charge.objects.filter(study_id=billed.study_id)) == Decimal("0")
    assert Charge.objects.filter(study_id=billed.study_id).count() == 4
    # and a signature retry still never bills again
    charge_for_final_read(report=Report.objects.get(pk=billed.report_id))
    assert Charge.objects.filter(study_id=billed.study_id, kind=ChargeKind.CHARGE).count() == 1


def test_only_operations_correct_a_charge_with_a_reason(billed, admin_chicago, neuro_reader, ops_omar):
    for outsider in (admin_chicago, neuro_reader):
        with pytest.raises(ChargeCorrectionRefused, match="operations"):
            charge_correct(
                charge_id=billed.pk, by=outsider, reason="cheaper", rate=Decimal("1"), at=timezone.now()
            )
    with pytest.raises(ChargeCorrectionRefused, match="reason"):
        charge_correct(charge_id=billed.pk, by=ops_omar, reason="  ", rate=Decimal("1"), at=timezone.now())
    with pytest.raises(ChargeCorrectionRefused, match="cannot be corrected"):
        charge_correct(charge_id=billed.pk, by=ops_omar, reason="move", study_id=1, at=timezone.now())
    assert list(Charge.objects.values_list("kind", flat=True)) == ["charge"]
    # and the database itself refuses a correction row without a reason or an original
    with pytest.raises(IntegrityError), transaction.atomic():
        Charge.objects.create(
            facility_id=billed.facility_id,
            study_id=billed.study_id,
            report_id=billed.report_id,
            kind=ChargeKind.CORRECTION,
            rate=1,
            amount=1,
            radiologist_id=billed.radiologist_id,
            signed_at=billed.signed_at,
            posted_at=timezone.now(),
        )


def test_the_correction_api_posts_new_rows_for_operations_only(billed, client, ops_omar, admin_chicago):
    url = f"/api/v1/reports/charges/{billed.pk}/corrections/"
    client.force_login(admin_chicago)  # the hospital's admin reads its bill, never corrects it
    assert (
        client.post(url, {"reason": "cheaper", "rate": "1.00"}, content_type="application/json").status_code
        == 403
    )
    client.force_login(ops_omar)
    assert client.post(url, {"rate": "1.00"}, content_type="application/json").status_code == 400  # no reason
    missing = "/api/v1/reports/charges/999999/corrections/"
    assert client.post(missing, {"reason": "x"}, content_type="application/json").status_code == 404
    response = client.post(url, {"reason": "Contract rate", "rate": "30.00"}, content_type="application/json")
    assert response.status_code == 201
    body = response.json()
    assert (body["reversal"]["kind"], body["reversal"]["amount"], body["reversal"]["corrects"]) == (
        "reversal",
        "-42.00",
        billed.pk,
    )
    assert (body["correction"]["kind"], body["correction"]["amount"], body["correction"]["reason"]) == (
        "correction",
        "30.00",
        "Contract rate",
    )
    again = client.post(url, {"reason": "again", "void": True}, content_type="application/json")
    assert again.status_code == 409 and "already corrected" in again.json()["detail"]
    assert Charge.objects.get(pk=billed.pk).amount == Decimal("42.00")
    assert Charge.objects.filter(study_id=billed.study_id).count() == 3
