"""The flush that ends every transactional test (radiology/test_postgresql/base.py, docs/testing.md):
every table emptied except what post_migrate seeded, which is kept as it was when no test changed
it and rebuilt by post_migrate when one did (rows, triggers)."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from accounts.models import User
from accounts.roles import ROLE_MODEL_PERMISSIONS, Role
from credentialing.models import Subspecialty
from facilities.models import Facility
from tests.conftest import make_user

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the PostgreSQL test backend's flush"),
    pytest.mark.django_db(transaction=True),
]


def flush() -> None:
    call_command("flush", verbosity=0, interactive=False, reset_sequences=False)


def seeded_rows() -> dict[str, list]:
    return {
        "content types": list(ContentType.objects.order_by("pk").values_list("pk", "app_label", "model")),
        "permissions": list(Permission.objects.order_by("pk").values_list("pk", "content_type", "codename")),
        "groups": [
            (group.pk, group.name, sorted(group.permissions.values_list("pk", flat=True)))
            for group in Group.objects.order_by("pk")
        ],
        "subspecialties": list(Subspecialty.objects.order_by("pk").values_list("pk", "code", "name")),
    }


def role_permissions(role: Role) -> set[str]:
    group = Group.objects.get(name=role.value)
    permissions = group.permissions.select_related("content_type")
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions}


def audit_log_refuses_updates() -> bool:
    entry = LogEntry.objects.order_by("pk").last()
    try:
        with transaction.atomic():
            LogEntry.objects.filter(pk=entry.pk).update(changes_text="rewritten")
    except DatabaseError:
        return True
    return False


def test_a_flush_empties_the_tests_rows_and_keeps_the_seeded_ones_as_they_were():
    flush()  # whatever ran before, the seeded tables are now post_migrate's and recorded
    before = seeded_rows()
    # given a test that wrote users, a facility and audit rows
    make_user("dr_flush", Role.RADIOLOGIST)
    Facility.objects.create(
        code="FLUSH", name="Flush General", state="IL", timezone="America/Chicago", kind="community"
    )
    assert LogEntry.objects.exists()
    # when the flush ends it
    flush()
    # then the test's rows are gone and the seeded ones are the same rows (kept, not rebuilt)
    assert not User.objects.exists() and not Facility.objects.exists() and not LogEntry.objects.exists()
    assert seeded_rows() == before
    # and the audit log is still append-only
    make_user("dr_after", None)
    assert audit_log_refuses_updates()


def test_a_flush_rebuilds_the_seeded_rows_a_test_changed():
    flush()
    assert role_permissions(Role.CREDENTIALING) == set(ROLE_MODEL_PERMISSIONS[Role.CREDENTIALING])
    # given a test that renamed a subspecialty and took a role group's permissions away
    Subspecialty.objects.filter(code=Subspecialty.NEURO).update(name="Brains")
    Group.objects.get(name=Role.CREDENTIALING.value).permissions.clear()
    # when the flush ends it
    flush()
    # then post_migrate has put them back
    assert Subspecialty.objects.get(code=Subspecialty.NEURO).name == "Neuroradiology"
    assert role_permissions(Role.CREDENTIALING) == set(ROLE_MODEL_PERMISSIONS[Role.CREDENTIALING])


def test_a_flush_reinstalls_a_trigger_a_test_dropped():
    flush()
    # given a test that dropped the audit log's append-only trigger (its rows unchanged)
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER auditlog_logentry_append_only ON auditlog_logentry")
    # when the flush ends it
    flush()
    # then the trigger is back and refuses an UPDATE again
    make_user("dr_trigger", None)
    assert audit_log_refuses_updates()
