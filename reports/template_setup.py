"""Database state for report templates, re-applied after every ``migrate`` (and after the test
runner's flush, which empties tables but re-sends post_migrate):

* a trigger refusing UPDATE of ``reports_templateversion``: a version is what reports were written on,
  so it never changes — an edit adds a version (``template_version_add``). Installed here rather than in
  a migration for the reason accounts/setup.py gives: SQLite drops a table's triggers when a later
  ALTER rebuilds it.
* the templates ReadRoom ships (``reports.defaults``)."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections

PG_VERSION_IMMUTABLE = """
CREATE OR REPLACE FUNCTION readroom_template_version_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a template version never changes: add a new version (% refused)', TG_OP;
END
$$;
DROP TRIGGER IF EXISTS reports_templateversion_immutable ON reports_templateversion;
CREATE TRIGGER reports_templateversion_immutable BEFORE UPDATE ON reports_templateversion
    FOR EACH ROW EXECUTE FUNCTION readroom_template_version_immutable();
"""

# UPDATE only, on both databases: deleting a facility (CASCADE) may remove its templates' versions,
# and the test database's flush empties tables with DELETE. Reports PROTECT the versions they use.
SQLITE_VERSION_IMMUTABLE = """
CREATE TRIGGER IF NOT EXISTS reports_templateversion_immutable BEFORE UPDATE ON reports_templateversion
BEGIN SELECT RAISE(ABORT, 'a template version never changes: add a new version (UPDATE refused)'); END;
"""


def template_version_immutable_ensure(using: str = DEFAULT_DB_ALIAS) -> None:
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(PG_VERSION_IMMUTABLE)
        elif connection.vendor == "sqlite":
            cursor.execute(SQLITE_VERSION_IMMUTABLE)


def on_post_migrate(sender, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    from reports.defaults import shipped_templates_ensure

    template_version_immutable_ensure(using)
    shipped_templates_ensure(using)
