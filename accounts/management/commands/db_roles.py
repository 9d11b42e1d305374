"""``manage.py db_roles --owner readroom_owner --app readroom``: the two database roles of the
documented install (docs/deployment.md "Two database roles", issue 15).

* the **owner** owns the database, the tables and ReadRoom's trigger functions and runs
  ``migrate``; nothing else connects as it;
* the **app** role is what the web, worker, beat, HL7 listener and DICOM SCP processes connect
  as: SELECT/INSERT/UPDATE/DELETE on the tables, only SELECT/INSERT on the append-only ones (the
  audit log, addenda, charges), no TRUNCATE and no ownership — so it cannot disable or drop the
  triggers that keep final reports and the audit log as they were written.

Run it with a connection that may do this (``DATABASE_URL`` of a superuser such as ``postgres``, or
of the owner when the roles exist and the owner already owns everything). Idempotent: run it again
after a restore, or to move an install whose app role owned the tables to this layout."""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

from radiology.db import (
    APPEND_ONLY_TABLES,
    app_role_grants_sql,
    role_facts,
    role_is_member_of,
    role_name_checked,
    schema_objects_owner_set,
)


class Command(BaseCommand):
    help = "Set up the database owner role (migrations) and the app role (DML only) and their grants."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--owner", required=True, help="role that owns the tables and runs migrate")
        parser.add_argument("--app", required=True, help="role the ReadRoom processes connect as")
        parser.add_argument(
            "--create",
            action="store_true",
            help="create missing roles (LOGIN), with the password in READROOM_DB_OWNER_PASSWORD / "
            "READROOM_DB_APP_PASSWORD when set",
        )
        parser.add_argument(
            "--sql", action="store_true", help="print the app role's grants as SQL instead of running them"
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args, owner: str, app: str, create: bool, sql: bool, database: str, **options) -> None:
        try:
            owner, app = role_name_checked(owner), role_name_checked(app)
        except ValueError as error:
            raise CommandError(str(error)) from None
        if owner == app:
            raise CommandError("--owner and --app must be two roles: that is the point")
        if sql:
            self.stdout.write(";\n".join(app_role_grants_sql(app, owner)) + ";")
            return
        connection = connections[database]
        if connection.vendor != "postgresql":
            raise CommandError("db_roles is for PostgreSQL (the embedded SQLite topology has no roles)")
        try:
            with transaction.atomic(using=database):
                self._roles_ensure(connection, owner, app, create=create, using=database)
                moved = schema_objects_owner_set(owner, using=database)
                with connection.cursor() as cursor:
                    cursor.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {owner}")
                    # the grants recorded as the owner's, whoever runs this (a superuser, a member)
                    cursor.execute(f"SET LOCAL ROLE {owner}")
                    cursor.execute("; ".join(app_role_grants_sql(app, owner)))
                    cursor.execute("RESET ROLE")
        except DatabaseError as error:
            raise CommandError(
                f"{error}".strip() + "\n(run db_roles as a superuser, or as a member of both roles)"
            ) from None
        self.stdout.write(
            f"{owner} owns the database and its tables ({moved} objects moved to it); {app} has "
            "SELECT/INSERT/UPDATE/DELETE, and SELECT/INSERT only on "
            f"{', '.join(sorted(APPEND_ONLY_TABLES))}; "
            "no TRUNCATE, no ownership.\n"
            f"Run migrate as {owner}; every ReadRoom process connects as {app}."
        )

    def _roles_ensure(self, connection, owner: str, app: str, *, create: bool, using: str) -> None:
        for name, password_env in ((owner, "READROOM_DB_OWNER_PASSWORD"), (app, "READROOM_DB_APP_PASSWORD")):
            facts = role_facts(name, using=using)
            password = os.environ.get(password_env, "")
            with connection.cursor() as cursor:
                if facts is None:
                    if not create:
                        raise CommandError(f"role {name} does not exist (add --create, or createuser it)")
                    cursor.execute(f"CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
                if password:
                    cursor.execute(connection.ops.compose_sql(f"ALTER ROLE {name} PASSWORD %s", [password]))
        facts = role_facts(app, using=using)
        if facts["superuser"] or facts["bypassrls"] or facts["createrole"]:
            raise CommandError(
                f"{app} is a superuser or may create roles: it could do anything the owner can"
            )
        if role_is_member_of(app, owner, using=using):
            raise CommandError(f"{app} is a member of {owner}: it could act as the tables' owner")
