"""Database state that every deployment must have, re-applied after every ``migrate``:

* the role groups and the model permissions each holds (accounts.roles.ROLE_MODEL_PERMISSIONS);
* the triggers that make the audit log append-only (and refuse its TRUNCATE);
* the app role's grants, when the owner running ``migrate`` has one (``manage.py db_roles``).

Done on ``post_migrate`` rather than in one migration so that it follows code changes to the role
table and survives a third-party migration that rebuilds ``auditlog_logentry`` (SQLite rebuilds
tables, and drops their triggers, on many ALTERs)."""

from __future__ import annotations

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.db import DEFAULT_DB_ALIAS

from accounts.roles import ROLE_MODEL_PERMISSIONS
from radiology.db import (
    app_role_grants_refresh,
    append_only_register,
    triggers_install,
    truncate_guards_ensure,
)

AUDIT_TABLE = "auditlog_logentry"
append_only_register(AUDIT_TABLE, what="the audit log")

PG_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION readroom_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % refused', TG_OP;
END
$$;
DROP TRIGGER IF EXISTS auditlog_logentry_append_only ON auditlog_logentry;
CREATE TRIGGER auditlog_logentry_append_only BEFORE UPDATE OR DELETE ON auditlog_logentry
    FOR EACH ROW EXECUTE FUNCTION readroom_audit_append_only();
"""

# SQLite (embedded topology) refuses UPDATE only: its test-database flush empties tables with
# DELETE, which a DELETE trigger would break. Nothing in ReadRoom deletes audit rows, and the admin
# shows them read-only.
SQLITE_APPEND_ONLY = """
CREATE TRIGGER IF NOT EXISTS auditlog_logentry_no_update BEFORE UPDATE ON auditlog_logentry
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE refused'); END;
"""


def role_groups_ensure(using: str = DEFAULT_DB_ALIAS) -> None:
    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)
    for role, perms in ROLE_MODEL_PERMISSIONS.items():
        group, _ = Group.objects.using(using).get_or_create(name=role.value)
        wanted = []
        for dotted in perms:
            app_label, codename = dotted.split(".", 1)
            wanted.append(
                Permission.objects.using(using).get(content_type__app_label=app_label, codename=codename)
            )
        group.permissions.set(wanted)


def audit_log_append_only_ensure(using: str = DEFAULT_DB_ALIAS) -> None:
    triggers_install(postgresql=PG_APPEND_ONLY, sqlite=[SQLITE_APPEND_ONLY], using=using)
    truncate_guards_ensure([AUDIT_TABLE], using=using)


def on_post_migrate(sender, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    role_groups_ensure(using)
    audit_log_append_only_ensure(using)
    # every app's tables exist by now: the app role's grants cover a table this migrate added
    # (docs/deployment.md "Two database roles")
    app_role_grants_refresh(using)
