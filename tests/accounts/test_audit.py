"""The audit trail: who changed or read which clinical record, when and from where; append-only."""

import pytest
from auditlog.context import set_actor
from auditlog.models import LogEntry
from django.db import DatabaseError, connection, transaction

from accounts.audit import audit_as
from imaging.models import Order, Patient, Study

pytestmark = pytest.mark.django_db


@pytest.fixture
def jane(chicago) -> Patient:
    return Patient.objects.create(
        facility=chicago,
        mrn="MRN-4711",
        assigning_authority="LAKESHORE",
        family_name="Quinlan",
        given_name="Jane",
    )


@pytest.fixture
def janes_study(chicago, jane) -> Study:
    order = Order.objects.create(
        facility=chicago,
        patient=jane,
        accession_number="A100",
        procedure_code="70450",
        procedure_text="CT HEAD",
    )
    return Study.objects.create(
        facility=chicago,
        patient=jane,
        order=order,
        study_instance_uid="1.2.840.1",
        accession_number="A100",
    )


@pytest.fixture
def superuser(db):
    from accounts.models import User

    return User.objects.create_superuser("root_support", password="x" * 16)


def test_change_is_recorded_with_user_address_and_patient(client, superuser, jane):
    client.force_login(superuser)
    client.post(
        f"/admin/imaging/patient/{jane.pk}/change/",
        {
            "facility": jane.facility_id,
            "mrn": jane.mrn,
            "assigning_authority": jane.assigning_authority,
            "family_name": "Quinlan-Smith",
            "given_name": "Jane",
            "middle_name": "",
            "sex": "F",
        },
        REMOTE_ADDR="10.20.30.40",
    )
    entry = LogEntry.objects.get_for_object(jane).filter(action=LogEntry.Action.UPDATE).get()
    assert entry.actor == superuser
    assert entry.remote_addr == "10.20.30.40"
    assert entry.additional_data["patient_id"] == jane.pk
    assert entry.changes_dict["family_name"] == ["Quinlan", "Quinlan-Smith"]


def test_reading_a_study_is_recorded(client, superuser, janes_study):
    client.force_login(superuser)
    assert client.get(f"/admin/imaging/study/{janes_study.pk}/change/").status_code == 200
    access = LogEntry.objects.get_for_object(janes_study).filter(action=LogEntry.Action.ACCESS).get()
    assert access.actor == superuser
    assert access.additional_data["patient_id"] == janes_study.patient_id


def test_audit_rows_cannot_be_changed(jane):
    entry = LogEntry.objects.get_for_object(jane).first()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LogEntry.objects.filter(pk=entry.pk).update(object_repr="tampered")


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite refuses UPDATE only (see accounts/setup.py)"
)
def test_audit_rows_cannot_be_deleted_on_postgresql(jane):
    entry = LogEntry.objects.get_for_object(jane).first()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LogEntry.objects.filter(pk=entry.pk).delete()


def test_audit_page_is_for_operations_and_director(
    client, verified_client, ops_omar, director_dana, admin_chicago, mso_mary
):
    for outsider in (admin_chicago, mso_mary):
        client.force_login(outsider)
        assert client.get("/audit/").status_code == 403
    client.force_login(ops_omar)
    assert client.get("/audit/").status_code == 200
    director = verified_client(director_dana)
    assert director.get("/audit/").status_code == 200


def test_search_by_patient_finds_every_record_about_them(
    client, ops_omar, superuser, jane, janes_study, chicago
):
    other = Patient.objects.create(
        facility=chicago, mrn="MRN-9", assigning_authority="LAKESHORE", family_name="Other"
    )
    client.force_login(superuser)
    client.get(f"/admin/imaging/study/{janes_study.pk}/change/")  # a read of Jane's study
    client.force_login(ops_omar)
    page = client.get("/audit/", {"patient": "MRN-4711"})
    rows = page.context["page"].object_list
    kinds = {(e.content_type.model, e.action) for e in rows}
    assert ("patient", LogEntry.Action.CREATE) in kinds
    assert ("order", LogEntry.Action.CREATE) in kinds
    assert ("study", LogEntry.Action.ACCESS) in kinds
    assert all(e.additional_data["patient_id"] == jane.pk for e in rows)
    assert other.pk not in {e.additional_data["patient_id"] for e in rows}
    # by family name, case-insensitive
    assert client.get("/audit/", {"patient": "quinlan"}).context["page"].paginator.count == len(rows)


def test_search_by_user_and_date(client, ops_omar, superuser, janes_study):
    client.force_login(superuser)
    client.get(f"/admin/imaging/study/{janes_study.pk}/change/")
    client.force_login(ops_omar)
    by_user = client.get("/audit/", {"user": "root_support"}).context["page"].object_list
    assert by_user and all(e.actor_id == superuser.pk for e in by_user)
    today = janes_study.created_at.date()
    assert client.get("/audit/", {"date_from": today, "date_to": today}).context["page"].paginator.count >= 3
    assert (
        client.get("/audit/", {"date_from": "2001-01-01", "date_to": "2001-01-02"})
        .context["page"]
        .paginator.count
        == 0
    )
    invalid = client.get("/audit/", {"date_from": "2001-01-05", "date_to": "2001-01-02"})
    assert b"must be on or before" in invalid.content


def test_audit_search_as_htmx_returns_rows_only(client, ops_omar, jane):
    client.force_login(ops_omar)
    response = client.get("/audit/", {"patient": "MRN-4711"}, HTTP_HX_REQUEST="true")
    assert b"<html" not in response.content
    assert b"audit-table" in response.content


def test_demographics_change_by_ingest_is_recorded_without_user(jane):
    jane.birth_date = "1970-01-01"
    jane.save()
    entry = LogEntry.objects.get_for_object(jane).filter(action=LogEntry.Action.UPDATE).get()
    assert entry.actor is None  # a system change, shown as "system"


def test_change_summary_reads_like_a_sentence(ops_omar):
    from accounts.audit import change_summary

    entries = LogEntry.objects.get_for_object(ops_omar).order_by("id")
    created, groups_added = entries[0], entries[1]
    assert "username: ops_omar" in change_summary(created)
    assert not any("None" in line for line in change_summary(created))
    assert change_summary(groups_added) == ["groups: add Operations"]


def test_one_helper_writes_the_rows_no_save_produces(ops_omar, janes_study):
    """``audit_entry_write``: the actor from the request's audit context, the object's patient and
    facility (as on auditlog's own rows), the changes and the extra data."""
    from auditlog.context import set_actor

    from accounts.audit import audit_entry_write

    with set_actor(ops_omar, remote_addr="10.0.0.9"):
        entry = audit_entry_write(
            janes_study,
            action=LogEntry.Action.UPDATE,
            changes={"status": ["dead", "discarded"]},
            extra={"dead_letter": True},
        )
    entry.refresh_from_db()
    assert entry.actor == ops_omar and entry.remote_addr == "10.0.0.9"
    assert entry.object_pk == str(janes_study.pk) and entry.object_repr == str(janes_study)
    assert entry.changes_dict == {"status": ["dead", "discarded"]}
    assert entry.additional_data == {
        "patient_id": janes_study.patient_id,
        "facility_id": janes_study.facility_id,
        "dead_letter": True,
    }


def test_audit_rows_are_built_in_accounts_audit_only():
    """One way to write an audit row by hand (DESIGN §7): no app builds a LogEntry itself (data
    migrations, which cannot import app code, excepted)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    apps = ("accounts", "facilities", "imaging", "credentialing", "worklist", "reports", "qa", "interfaces")
    builders = [
        str(path.relative_to(root))
        for app in apps
        for path in (root / app).rglob("*.py")
        if "migrations" not in path.parts and "LogEntry.objects.create(" in path.read_text()
    ]
    assert builders == ["accounts/audit.py"]


def test_audit_as_names_its_actor_and_reason_then_puts_the_requests_context_back(ops_omar, mso_mary, chicago):
    # given a request acting as Mary, in which a service writes as Omar with a reason
    with set_actor(mso_mary):
        with audit_as(ops_omar, reason="identity domain merge"):
            chicago.name = "Lakeshore A"
            chicago.save()
        # when the request writes again after the service
        chicago.name = "Lakeshore B"
        chicago.save()
    # then the service's row is Omar's with the reason, and the next is Mary's again
    rows = LogEntry.objects.get_for_object(chicago).filter(action=LogEntry.Action.UPDATE).order_by("pk")
    assert [(r.actor, r.changes_text) for r in rows] == [
        (ops_omar, "identity domain merge"),
        (mso_mary, ""),
    ]


def test_search_by_action_and_pages_of_fifty(client, ops_omar, superuser, janes_study):
    """Issue 19: the audit log filters by action and pages its rows (50 a page)."""
    from accounts.audit import audit_entry_write

    client.force_login(superuser)
    client.get(f"/admin/imaging/study/{janes_study.pk}/change/")  # an access row beside the creations
    client.force_login(ops_omar)
    reads = client.get("/audit/", {"action": LogEntry.Action.ACCESS}).context["page"]
    assert reads.object_list and {e.action for e in reads.object_list} == {LogEntry.Action.ACCESS}
    created = client.get("/audit/", {"action": LogEntry.Action.CREATE}).context["page"]
    assert created.object_list and {e.action for e in created.object_list} == {LogEntry.Action.CREATE}
    # more rows than a page: the second page holds the rest
    for _ in range(55):
        audit_entry_write(janes_study, action=LogEntry.Action.ACCESS, changes={})
    first = client.get("/audit/", {"action": LogEntry.Action.ACCESS}).context["page"]
    second = client.get("/audit/", {"action": LogEntry.Action.ACCESS, "page": 2}).context["page"]
    assert len(first.object_list) == 50 and first.has_next()
    assert len(second.object_list) == first.paginator.count - 50 > 0


def test_deferred_audit_rows_are_auditlogs_own_written_at_once_and_dropped_with_their_savepoint(
    ops_omar, chicago
):
    from django.test.utils import CaptureQueriesContext

    from accounts.audit import AuditRowsDeferred

    deferred = AuditRowsDeferred()
    with set_actor(ops_omar), CaptureQueriesContext(connection) as queries:
        # given two changes collected, each in its own savepoint, and a third rolled back
        with deferred.collecting(), transaction.atomic():
            kept = Patient.objects.create(
                facility=chicago, mrn="D-1", assigning_authority="X", family_name="Doe"
            )
        with deferred.collecting(), transaction.atomic():
            kept.family_name = "Dough"
            kept.save(update_fields=["family_name"])
        with pytest.raises(RuntimeError), deferred.collecting(), transaction.atomic():
            Patient.objects.create(facility=chicago, mrn="D-2", assigning_authority="X", family_name="Gone")
            raise RuntimeError("the message failed after its patient was stored")
        # then nothing is written until the batch writes them (auditlog writes through the hook)
        assert len(deferred.rows) == 2
        assert not LogEntry.objects.filter(content_type__model="patient").exists()
        deferred.write()
    inserts = [q for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "auditlog_logentry"')]
    assert len(inserts) == 1
    # and the rows are those auditlog writes at each save: the create, then the change, with the actor
    rows = list(LogEntry.objects.filter(content_type__model="patient").order_by("pk"))
    assert [(r.object_pk, r.action) for r in rows] == [
        (str(kept.pk), LogEntry.Action.CREATE),
        (str(kept.pk), LogEntry.Action.UPDATE),
    ]
    assert rows[1].changes == {"family_name": ["Doe", "Dough"]}
    assert {r.actor for r in rows} == {ops_omar}
    assert rows[0].timestamp < rows[1].timestamp  # each the time of its change, not of the write
    assert not Patient.objects.filter(mrn="D-2").exists()
    # and outside a collecting block every row is written at once, as before
    kept.given_name = "Jane"
    kept.save(update_fields=["given_name"])
    assert LogEntry.objects.filter(content_type__model="patient").count() == 3
