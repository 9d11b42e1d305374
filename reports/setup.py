"""Database triggers that make a signed report immutable (issue 6: "enforced in the database layer,
not only the form"), re-applied after every ``migrate`` like the audit log's (accounts.setup):
SQLite drops a table's triggers whenever a migration rebuilds the table.

* ``reports_report``: an UPDATE of a row whose status *was* final is refused, whatever it changes
  (values, signature, status, template version …). Corrections are addenda, which are rows of their
  own. PostgreSQL also refuses DELETE of a final report.
* ``reports_addendum``: every addendum is signed when it is written, so any UPDATE is refused;
  PostgreSQL also refuses DELETE.
* ``reports_charge``: a charge is what was billed, so any UPDATE (both databases) and DELETE
  (PostgreSQL) is refused; a correction is a reversal row and a replacement row that reference the
  original (``reports.services.charge_correct``).
* TRUNCATE (PostgreSQL) of reports, addenda and charges is refused by a statement trigger, the
  owner's included (``radiology.db.truncate_guard_sql``).
* ``reports_templateversion``: an UPDATE is refused on both databases: a version is what reports were
  written on, so it never changes — an edit adds a version (``template_version_add``). DELETE stays
  open: deleting a facility cascades to its templates, and reports PROTECT the versions they use.

The same hook loads the templates ReadRoom ships (``reports.defaults``), idempotently.

SQLite keeps DELETE open for the same reason as the audit log: Django's test flush empties tables
with DELETE (PostgreSQL's flush uses TRUNCATE, which fires no row triggers). Nothing in ReadRoom
deletes reports, and the admin does not offer it."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS

from radiology.db import (
    append_only_register,
    triggers_install,
    truncate_guards_ensure,
)

append_only_register("reports_addendum", what="signed addenda")
append_only_register("reports_charge", what="billing charges")

PG_IMMUTABLE = """
CREATE OR REPLACE FUNCTION readroom_report_final_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'final' THEN
        RAISE EXCEPTION 'report % is final and cannot be changed: % refused (write an addendum)',
            OLD.id, TG_OP;
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS reports_report_final_immutable ON reports_report;
CREATE TRIGGER reports_report_final_immutable BEFORE UPDATE OR DELETE ON reports_report
    FOR EACH ROW EXECUTE FUNCTION readroom_report_final_immutable();

CREATE OR REPLACE FUNCTION readroom_addendum_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a signed addendum cannot be changed: % refused', TG_OP;
END
$$;
DROP TRIGGER IF EXISTS reports_addendum_immutable ON reports_addendum;
CREATE TRIGGER reports_addendum_immutable BEFORE UPDATE OR DELETE ON reports_addendum
    FOR EACH ROW EXECUTE FUNCTION readroom_addendum_immutable();

CREATE OR REPLACE FUNCTION readroom_charge_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'charge % was billed and cannot be changed: % refused (post a correction)',
        OLD.id, TG_OP;
END
$$;
DROP TRIGGER IF EXISTS reports_charge_append_only ON reports_charge;
CREATE TRIGGER reports_charge_append_only BEFORE UPDATE OR DELETE ON reports_charge
    FOR EACH ROW EXECUTE FUNCTION readroom_charge_append_only();
"""

SQLITE_IMMUTABLE = (
    """
CREATE TRIGGER IF NOT EXISTS reports_report_final_immutable BEFORE UPDATE ON reports_report
FOR EACH ROW WHEN OLD.status = 'final'
BEGIN SELECT RAISE(ABORT, 'report is final and cannot be changed: UPDATE refused (write an addendum)'); END;
""",
    """
CREATE TRIGGER IF NOT EXISTS reports_addendum_immutable BEFORE UPDATE ON reports_addendum
BEGIN SELECT RAISE(ABORT, 'a signed addendum cannot be changed: UPDATE refused'); END;
""",
    """
CREATE TRIGGER IF NOT EXISTS reports_charge_append_only BEFORE UPDATE ON reports_charge
BEGIN SELECT RAISE(ABORT, 'a charge was billed and cannot be changed: UPDATE refused (correct it)'); END;
""",
)

TRUNCATE_GUARDED = ("reports_report", "reports_addendum", "reports_charge")


def report_immutability_ensure(using: str = DEFAULT_DB_ALIAS) -> None:
    triggers_install(postgresql=PG_IMMUTABLE, sqlite=SQLITE_IMMUTABLE, using=using)
    truncate_guards_ensure(TRUNCATE_GUARDED, using=using)


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
    triggers_install(postgresql=PG_VERSION_IMMUTABLE, sqlite=[SQLITE_VERSION_IMMUTABLE], using=using)


def on_post_migrate(sender, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    from reports.defaults import shipped_templates_ensure

    report_immutability_ensure(using)
    template_version_immutable_ensure(using)
    shipped_templates_ensure(using)
