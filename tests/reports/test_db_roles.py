"""The two database roles of the documented install (issue 15, docs/deployment.md "Two database
roles"): ``manage.py db_roles`` makes an owner that owns the tables and an app role with DML only.
Connected as the app role, TRUNCATE, disabling or dropping a trigger, UPDATE of a final report and
DELETE of an audit row are refused by PostgreSQL itself, while ReadRoom's own writes — signing a
report, its charge and correction, the audit rows — go through; the owner's TRUNCATE is refused by
a trigger. Real roles in the test cluster, dropped afterwards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from auditlog.models import LogEntry
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from accounts.checks import database_role_check
from radiology.db import connected_role_hazards
from reports.models import Charge, ChargeKind, Report, ReportStatus
from reports.services import report_draft_save, report_sign, report_start
from tests.conftest import PASSWORD
from tests.reports.conftest import FILLED, head_ct_study
from worklist.services import study_claim

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="roles and grants are PostgreSQL's"),
]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def roles():
    """An owner and an app role named after the test database (roles are cluster-wide and other
    runs share the cluster); afterwards everything goes back to the suite's superuser."""
    suffix = re.sub(r"[^a-z0-9_]", "_", connection.settings_dict["NAME"].lower())[-40:]
    owner, app = f"rr_owner_{suffix}", f"rr_app_{suffix}"
    yield owner, app
    with connection.cursor() as cursor:
        for role in (owner, app):
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
            if cursor.fetchone():
                cursor.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
                cursor.execute(f"DROP OWNED BY {role}")
                cursor.execute(f"DROP ROLE {role}")


def _connect(role: str) -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, dbname=db["NAME"], user=role, autocommit=True
    )


def _refused(conn: psycopg.Connection, sql: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        conn.execute(sql)


# a real ReadRoom process connected as the app role: sign a final report (report, study, charge,
# outbox, events and audit rows), then correct its charge (new rows)
APP_WRITES = """
import json, django
from decimal import Decimal
django.setup()
from django.utils import timezone
from django.db import connection
from accounts.models import User
from reports.services import charge_correct, report_draft_save, report_sign, report_start
reader, ops = User.objects.get(pk={reader}), User.objects.get(pk={ops})
report = report_start(study_id={study}, user=reader, at=timezone.now())
report_draft_save(report_id=report.pk, user=reader, values={values}, at=timezone.now())
report = report_sign(report_id=report.pk, user=reader, secret={password!r}, at=timezone.now(), final=True)
reversal, correction = charge_correct(
    charge_id=report.charges.get().pk, by=ops, reason="contract", rate=Decimal("30"), at=timezone.now()
)
with connection.cursor() as cursor:
    cursor.execute("SELECT current_user")
    print(json.dumps({{"role": cursor.fetchone()[0], "report": report.pk, "correction": correction.pk}}))
"""


def test_the_app_role_cannot_truncate_disable_triggers_or_rewrite_history_but_the_app_works(
    roles, claimed_head_ct, neuro_reader, ops_omar, chicago
):
    owner, app = roles
    # a final report and its audit trail, written by the suite (superuser)
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    report_sign(report_id=report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True)
    audit_row = LogEntry.objects.order_by("pk").first()
    second = head_ct_study(chicago)
    study_claim(study_id=second.pk, user=neuro_reader, at=timezone.now())

    call_command("db_roles", owner=owner, app=app, create=True)

    with connection.cursor() as cursor:  # the owner owns the database and every table now
        cursor.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> %s", [owner]
        )
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
        assert cursor.fetchone()[0] == owner

    with _connect(app) as conn:
        denied = psycopg.errors.InsufficientPrivilege
        for table in ("auditlog_logentry", "reports_report", "reports_charge", "reports_addendum"):
            _refused(conn, f"TRUNCATE {table} CASCADE", denied, "permission denied")
        _refused(conn, "ALTER TABLE reports_report DISABLE TRIGGER USER", denied, "must be owner")
        _refused(conn, "ALTER TABLE auditlog_logentry DISABLE TRIGGER ALL", denied, "must be owner")
        _refused(
            conn, "DROP TRIGGER reports_report_final_immutable ON reports_report", denied, "must be owner"
        )
        _refused(
            conn, "SET session_replication_role = replica", denied, "permission denied"
        )  # skips triggers
        _refused(conn, "CREATE TABLE rr_scratch (id int)", denied, "permission denied")
        _refused(
            conn,
            f"UPDATE reports_report SET signed_text = 'tampered' WHERE id = {report.pk}",  # noqa: S608
            psycopg.errors.RaiseException,
            "final",
        )
        _refused(
            conn,
            f"DELETE FROM auditlog_logentry WHERE id = {audit_row.pk}",  # noqa: S608
            denied,
            "permission denied",
        )
        _refused(conn, "UPDATE auditlog_logentry SET object_repr = 'x'", denied, "permission denied")
        _refused(conn, "UPDATE reports_charge SET amount = 0", denied, "permission denied")
        _refused(conn, "DELETE FROM reports_charge", denied, "permission denied")

        assert connected_role_hazards(conn.cursor()) == []  # check --deploy has nothing to say
    with connection.cursor() as cursor:  # the suite's superuser would be warned about
        assert "is a superuser" in connected_role_hazards(cursor)
    assert [w.id for w in database_role_check()] == ["readroom.W015"]

    with _connect(owner) as conn:  # the owner may do all that; the trigger stops an accident
        assert any("owns the tables" in h for h in connected_role_hazards(conn.cursor()))
        _refused(conn, "TRUNCATE auditlog_logentry", psycopg.errors.RaiseException, "TRUNCATE refused")
        _refused(conn, "TRUNCATE reports_charge CASCADE", psycopg.errors.RaiseException, "TRUNCATE refused")

    # ReadRoom itself, connected as the app role, signs and bills and corrects
    db = connection.settings_dict
    url = f"postgres://{app}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    code = APP_WRITES.format(
        reader=neuro_reader.pk, ops=ops_omar.pk, study=second.pk, values=FILLED, password=PASSWORD
    )
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "radiology.settings.test"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads(done.stdout.strip().splitlines()[-1])
    assert written["role"] == app
    signed = Report.objects.get(pk=written["report"])
    assert signed.status == ReportStatus.FINAL
    assert [c.kind for c in Charge.objects.filter(study=second).order_by("pk")] == [
        ChargeKind.CHARGE,
        ChargeKind.REVERSAL,
        ChargeKind.CORRECTION,
    ]
    assert LogEntry.objects.get_for_object(signed).exists()  # the audit rows were written
    assert LogEntry.objects.get_for_object(Charge.objects.get(pk=written["correction"])).exists()


def test_migrate_by_the_owner_keeps_the_app_roles_grants(roles):
    """After ``migrate`` (post_migrate, as the owner) the append-only tables still refuse the app
    role's UPDATE and DELETE — the default privileges alone would have given them back."""
    owner, app = roles
    call_command("db_roles", owner=owner, app=app, create=True)
    with _connect(owner) as conn:  # as a migration adding a table would
        conn.execute(f"GRANT UPDATE, DELETE ON auditlog_logentry TO {app}")
    from radiology.db import app_role_grants_refresh

    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {owner}")
        try:
            assert app_role_grants_refresh() == [app]
        finally:
            cursor.execute("RESET ROLE")
    with _connect(app) as conn:
        _refused(
            conn, "DELETE FROM auditlog_logentry", psycopg.errors.InsufficientPrivilege, "permission denied"
        )
        conn.execute("SELECT count(*) FROM auditlog_logentry")  # reading stays open


def test_db_roles_refuses_an_app_role_that_could_become_the_owner(roles):
    owner, app = roles
    call_command("db_roles", owner=owner, app=app, create=True)
    with connection.cursor() as cursor:
        cursor.execute(f"GRANT {owner} TO {app}")
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="member"):
        call_command("db_roles", owner=owner, app=app)
    with pytest.raises(CommandError, match="two roles"):
        call_command("db_roles", owner=owner, app=owner)
    with pytest.raises(CommandError, match="role name"):
        call_command("db_roles", owner=owner, app="app; DROP TABLE x")
