"""A final report is immutable in the database itself (issue 6): a raw SQL UPDATE — not only the
form or the service — fails, on SQLite and on PostgreSQL (CI runs this file on both)."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from reports.models import Addendum, Report, ReportStatus
from reports.services import addendum_sign, report_draft_save, report_sign, report_start
from tests.conftest import PASSWORD
from tests.reports.conftest import FILLED

pytestmark = pytest.mark.django_db


@pytest.fixture
def final_report(claimed_head_ct, neuro_reader) -> Report:
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    return report_sign(report_id=report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True)


def _raw(sql: str, params: list) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.mark.parametrize(
    "assignment",
    [
        "signed_text = 'Normal.'",
        "\"values\" = '{}'",
        "status = 'draft'",
        "signed_at = NULL, signed_by_id = NULL, status = 'draft'",
        "template_version_id = template_version_id",
        "is_critical = TRUE",
    ],
)
def test_a_raw_update_of_a_final_report_fails(final_report, assignment):
    with pytest.raises(DatabaseError, match="final"):
        _raw(f"UPDATE reports_report SET {assignment} WHERE id = %s", [final_report.pk])  # noqa: S608
    assert Report.objects.get(pk=final_report.pk).signed_text == final_report.signed_text


def test_a_draft_can_still_be_updated(claimed_head_ct, neuro_reader):
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    _raw('UPDATE reports_report SET "values" = %s WHERE id = %s', ['{"findings": "ok"}', report.pk])
    assert Report.objects.get(pk=report.pk).values == {"findings": "ok"}


def test_the_orm_cannot_save_a_final_report_either(final_report):
    final_report.values = {"impression": "changed"}
    with pytest.raises(DatabaseError), transaction.atomic():
        final_report.save()
    assert Report.objects.get(pk=final_report.pk).status == ReportStatus.FINAL


def test_a_signed_addendum_cannot_be_updated(final_report, neuro_reader):
    addendum = addendum_sign(
        report_id=final_report.pk, user=neuro_reader, text="Correction.", secret=PASSWORD, at=timezone.now()
    )
    with pytest.raises(DatabaseError, match="addendum"):
        _raw("UPDATE reports_addendum SET text = 'x' WHERE id = %s", [addendum.pk])
    assert Addendum.objects.get(pk=addendum.pk).text == "Correction."


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL refuses DELETE too (see reports.setup)"
)
def test_postgresql_refuses_deleting_a_final_report_or_an_addendum(final_report, neuro_reader):
    addendum = addendum_sign(
        report_id=final_report.pk, user=neuro_reader, text="Correction.", secret=PASSWORD, at=timezone.now()
    )
    with pytest.raises(DatabaseError, match="addendum"):
        _raw("DELETE FROM reports_addendum WHERE id = %s", [addendum.pk])
    with pytest.raises(DatabaseError, match="final"), transaction.atomic():
        # the row trigger refuses before the (deferred) foreign key from the charge would
        _raw("DELETE FROM reports_report WHERE id = %s", [final_report.pk])
    assert Report.objects.filter(pk=final_report.pk).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has no TRUNCATE")
@pytest.mark.parametrize(
    "table", ["reports_report", "reports_addendum", "reports_charge", "auditlog_logentry"]
)
def test_postgresql_refuses_truncating_reports_charges_and_the_audit_log(final_report, table):
    # even as the tables' owner (the suite runs as a superuser): a statement trigger, not a grant
    with (
        pytest.raises(DatabaseError, match="TRUNCATE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's own pending FK checks first
        cursor.execute(f"TRUNCATE {table} CASCADE")
    assert Report.objects.filter(pk=final_report.pk).exists()
