"""Database-level rules that Django's migrations cannot keep: triggers (append-only audit log,
immutable final reports and template versions).

They are (re)installed after every ``migrate`` — and after the test runner's flush, which re-sends
post_migrate — rather than in a migration, because SQLite drops a table's triggers whenever a later
migration rebuilds the table. Each statement must be idempotent (CREATE OR REPLACE / DROP … IF EXISTS,
CREATE TRIGGER IF NOT EXISTS)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from django.db import DEFAULT_DB_ALIAS, connections


def triggers_install(*, postgresql: str, sqlite: Sequence[str], using: str = DEFAULT_DB_ALIAS) -> None:
    """Run the statements for the database in use (PostgreSQL: one script; SQLite: one statement at a
    time, as its driver requires)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(postgresql)
        elif connection.vendor == "sqlite":
            for statement in sqlite:
                cursor.execute(statement)


# --- append-only tables, TRUNCATE guard, the app role's grants (issue 15) ----------------------------

# Tables whose rows are never changed or deleted once written (the audit log, signed addenda,
# charges): each app registers its own (``append_only_register``), so the app role's grants
# (``app_role_grants_sql``) leave out UPDATE and DELETE on them.
APPEND_ONLY_TABLES: dict[str, str] = {}

_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def append_only_register(table: str, *, what: str) -> None:
    """``table`` is append-only: the app role may SELECT and INSERT only (its own triggers refuse
    UPDATE/DELETE to everyone, and the app's TRUNCATE guard refuses emptying it)."""
    APPEND_ONLY_TABLES[table] = what


PG_TRUNCATE_REFUSED_FUNCTION = """
CREATE OR REPLACE FUNCTION readroom_truncate_refused() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is kept for good: TRUNCATE refused (an owner who means it disables %)',
        TG_TABLE_NAME, TG_NAME;
END
$$;
"""


def truncate_guard_sql(table: str) -> str:
    """A statement trigger that refuses TRUNCATE of ``table`` — whoever runs it, the tables' owner
    included: privileges cannot stop an owner, a trigger stops an accident. Deliberately emptying
    the table takes ``ALTER TABLE … DISABLE TRIGGER`` first, which only the owner may run."""
    trigger = f"{table}_no_truncate"
    return (
        f"DROP TRIGGER IF EXISTS {trigger} ON {table};\n"
        f"CREATE TRIGGER {trigger} BEFORE TRUNCATE ON {table}\n"
        "    FOR EACH STATEMENT EXECUTE FUNCTION readroom_truncate_refused();\n"
    )


def truncate_guards_ensure(tables: Sequence[str], using: str = DEFAULT_DB_ALIAS) -> None:
    """Install the TRUNCATE triggers of ``tables`` (PostgreSQL; SQLite has no TRUNCATE)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    script = PG_TRUNCATE_REFUSED_FUNCTION + "".join(truncate_guard_sql(table) for table in tables)
    with connection.cursor() as cursor:
        cursor.execute(script)


def role_name_checked(name: str) -> str:
    """A PostgreSQL role name as the grants below write it unquoted; anything else is refused, so
    no name can carry SQL."""
    if not _ROLE_NAME.fullmatch(name):
        raise ValueError(f"role name {name!r}: lower-case letters, digits and _ only, at most 63")
    return name


def app_role_grants_sql(app: str, owner: str) -> list[str]:
    """What the app role (web, workers, listeners, SCP) may do, run by the owner: DML on every
    table, none of UPDATE/DELETE on the append-only ones, and never TRUNCATE, REFERENCES or TRIGGER
    — nor anything that needs ownership (ALTER TABLE … DISABLE TRIGGER, DROP). The default
    privileges give the tables of later migrations the same DML; ``app_role_grants_refresh``
    re-applies the exceptions after every migrate."""
    app, owner = role_name_checked(app), role_name_checked(owner)
    statements = [
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {app}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {app}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {app}",
    ]
    statements += [f"REVOKE UPDATE, DELETE ON {table} FROM {app}" for table in sorted(APPEND_ONLY_TABLES)]
    return statements


def app_roles_of_current_owner(using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """The app roles set up for the connected owner: the grantees of its default table privileges
    in ``public`` (``db_roles`` made them), so ``migrate`` finds them without a setting."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            """
            SELECT DISTINCT grantee.rolname FROM pg_default_acl d
            CROSS JOIN LATERAL aclexplode(d.defaclacl) acl
            JOIN pg_roles grantee ON grantee.oid = acl.grantee
            WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)
              AND d.defaclnamespace = 'public'::regnamespace AND d.defaclobjtype = 'r'
              AND acl.grantee <> d.defaclrole
            ORDER BY 1
            """
        )
        return [name for (name,) in cursor.fetchall()]


def app_role_grants_refresh(using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """After a migrate by the owner: the app roles' grants again, so a table the migration added
    has its DML and an append-only one has no UPDATE/DELETE. Returns the roles refreshed."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return []
    roles = app_roles_of_current_owner(using)
    if not roles:
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        (owner,) = cursor.fetchone()
        for app in roles:
            cursor.execute("; ".join(app_role_grants_sql(app, owner)))
    return roles


def schema_objects_owner_set(owner: str, using: str = DEFAULT_DB_ALIAS) -> int:
    """Give ``owner`` the database, every table, view and free-standing sequence of ``public`` and
    ReadRoom's trigger functions — an install where the app's role owned them all is moved to the
    two-role layout in place. (A sequence that belongs to a column moves with its table.) Needs a
    superuser, or a member of both the current owner and ``owner``. Returns how many changed."""
    owner = role_name_checked(owner)
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                  WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                   quote_ident(c.relname)
            FROM pg_class c
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
              AND pg_get_userbyid(c.relowner) <> %s
              AND NOT (c.relkind = 'S' AND EXISTS (
                  SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
            UNION ALL
            SELECT 'FUNCTION', p.oid::regprocedure::text FROM pg_proc p
            WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'readroom\\_%%'
              AND pg_get_userbyid(p.proowner) <> %s
            """,
            [owner, owner],
        )
        objects = cursor.fetchall()
        cursor.execute("SELECT quote_ident(current_database())")
        (database,) = cursor.fetchone()
        statements = [f"ALTER DATABASE {database} OWNER TO {owner}"]
        statements += [f"ALTER {kind} {name} OWNER TO {owner}" for kind, name in objects]
        cursor.execute("; ".join(statements))
    return len(objects)


def role_facts(name: str, using: str = DEFAULT_DB_ALIAS) -> dict[str, bool] | None:
    """Whether role ``name`` exists, may log in, is a superuser, may create roles or databases."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles "
            "WHERE rolname = %s",
            [name],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip(("login", "superuser", "createrole", "createdb", "bypassrls"), row, strict=True))


def role_is_member_of(member: str, role: str, using: str = DEFAULT_DB_ALIAS) -> bool:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [member, role])
        return bool(cursor.fetchone()[0])


def connected_role_hazards(cursor) -> list[str]:
    """What the connected role could do to history that the app role must not: be a superuser, own
    (or act as the owner of) the audit log, TRUNCATE it, or change its rows. Empty for the app role
    ``db_roles`` sets up. ``cursor``: any DB-API cursor on the database (Django's or psycopg's)."""
    cursor.execute(
        """
        SELECT r.rolsuper,
               pg_has_role(current_user, c.relowner, 'USAGE'),
               has_table_privilege(c.oid, 'TRUNCATE'),
               has_table_privilege(c.oid, 'UPDATE') OR has_table_privilege(c.oid, 'DELETE')
        FROM pg_class c, pg_roles r
        WHERE c.oid = to_regclass('public.auditlog_logentry') AND r.rolname = current_user
        """
    )
    row = cursor.fetchone()
    if row is None:
        return []  # not migrated yet
    superuser, owner, truncate, rewrite = row
    return [
        text
        for present, text in (
            (superuser, "is a superuser"),
            (owner and not superuser, "owns the tables (or may act as their owner): it can disable triggers"),
            (truncate and not (owner or superuser), "may TRUNCATE the audit log"),
            (rewrite and not (owner or superuser), "may UPDATE or DELETE audit rows"),
        )
        if present
    ]
