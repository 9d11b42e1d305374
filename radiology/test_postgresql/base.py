"""Django's PostgreSQL backend with one change for the test suite: a flush DELETEs instead of
TRUNCATEs (radiology.settings.test selects it when the suite runs on PostgreSQL).

Every transactional test ends with a flush of all ~150 tables. TRUNCATE gives each table and index
a new file, which cost 3.6 s per flush at load 5 on the 2-core CI machine (measured with cProfile
over `manage.py flush`; 0.7 s with DELETE): with a few hundred transactional tests that was minutes
of `make test`. The rows a test leaves are few, so DELETE is the cheaper reset. Django's foreign
keys on PostgreSQL are DEFERRABLE INITIALLY DEFERRED and the flush runs in one transaction, so the
order of the DELETEs does not matter. Tables whose own triggers refuse a DELETE (the append-only
audit log, final reports: radiology/db.py) have those triggers paused for the flush.

A second change: the flush keeps the rows ``post_migrate`` writes when no test changed them. After
the DELETE, Django re-sends ``post_migrate``, which rebuilds the content types, ~700 permissions, the
role groups, subspecialties, shipped templates and catalogue rows and re-installs the triggers:
~0.7 s of the ~0.75 s a transactional test's teardown took (load 6), ~350 tests. Right after a
full flush and its ``post_migrate``, the connection records which tables it wrote and filled
("seeded") and a fingerprint: each seeded table's rows (md5 of every row's text, ids included) and
the schema's triggers, functions, owners and grants. A later flush that finds the same
fingerprint deletes every other table only and skips ``post_migrate``: the database is then row for
row what the full flush would leave, except that the seeded rows keep their ids. A test that
changed any of it (a renamed subspecialty, a group's permissions, a dropped trigger, a grant) gets
the full flush.
Production never uses this module."""

import re
import time

from django.core.management.commands import flush as flush_command
from django.db import OperationalError, connections
from django.db.backends.postgresql import base

# Tables with triggers of their own (not the internal ones that enforce foreign keys).
_TRIGGERED_TABLES = """
SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE NOT t.tgisinternal AND c.relnamespace = 'public'::regnamespace
"""


# What post_migrate may change outside the rows: triggers (and whether they are on), functions,
# owners and grants of the public schema, default privileges (radiology/db.py, accounts.setup).
_SCHEMA_FINGERPRINT = """
SELECT concat_ws('|',
  (SELECT string_agg(concat_ws(':', t.tgrelid::regclass, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)),
                     ',' ORDER BY t.tgrelid::regclass::text, t.tgname)
   FROM pg_trigger t WHERE NOT t.tgisinternal),
  (SELECT string_agg(concat_ws(':', p.oid::regprocedure, md5(p.prosrc), p.proowner, p.proacl),
                     ',' ORDER BY p.oid::regprocedure::text)
   FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace),
  (SELECT string_agg(concat_ws(':', c.relname, c.relkind, c.relowner, c.relacl), ',' ORDER BY c.relname)
   FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')),
  (SELECT string_agg(concat_ws(':', d.defaclrole, d.defaclnamespace, d.defaclobjtype, d.defaclacl),
                     ',' ORDER BY d.defaclrole, d.defaclnamespace, d.defaclobjtype)
   FROM pg_default_acl d)
)
"""


class DatabaseOperations(base.DatabaseOperations):
    # (seeded tables, their fingerprint) as the last full flush's post_migrate left them
    seeded: tuple[tuple[str, ...], str] | None = None
    # this flush kept the seeded tables: its post_migrate is skipped (_flush_post_migrate)
    seeded_kept = False

    def _fingerprint(self, tables: tuple[str, ...]) -> str:
        rows = [
            "(SELECT md5(coalesce(string_agg(seeded_row::text, ',' ORDER BY seeded_row::text), ''))"  # noqa: S608 (table names from Django, quoted)
            f" FROM {self.quote_name(table)} seeded_row)"
            for table in tables
        ]
        with self.connection.cursor() as cursor:
            cursor.execute(f"SELECT concat_ws('|', ({_SCHEMA_FINGERPRINT}), {', '.join(rows) or 'NULL'})")
            return cursor.fetchone()[0]

    def seeded_record(self, written: set[str]) -> None:
        """After post_migrate: the tables it wrote (``written``, on this connection: a row a live
        server's straggling request wrote meanwhile is not seeded, and goes at the next flush) that
        hold rows, and their fingerprint."""
        tables = sorted(written & set(self.connection.introspection.table_names()))
        exists = ", ".join(f"EXISTS (SELECT 1 FROM {self.quote_name(table)})" for table in tables)  # noqa: S608
        with self.connection.cursor() as cursor:
            cursor.execute(f"SELECT {exists or 'NULL'}")
            filled = cursor.fetchone() if tables else ()
        seeded = tuple(table for table, full in zip(tables, filled, strict=True) if full)
        self.seeded = (seeded, self._fingerprint(seeded))

    def _seeded_unchanged(self, tables) -> bool:
        if self.seeded is None:
            return False
        seeded, fingerprint = self.seeded
        return set(seeded) <= set(tables) and self._fingerprint(seeded) == fingerprint

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        self.seeded_kept = False
        if not tables:
            return []
        if not reset_sequences and self._seeded_unchanged(tables):
            kept = set(self.seeded[0])
            tables = [table for table in tables if table not in kept]
            self.seeded_kept = True
        with self.connection.cursor() as cursor:
            cursor.execute(_TRIGGERED_TABLES)
            triggered = {name for (name,) in cursor.fetchall()}
        # The triggers are switched off inside the flush's own transaction (the owner may; it
        # takes the table's lock until the commit), so the append-only rules stay on for the tests.
        # USER covers the TRUNCATE guards too (radiology.db.truncate_guard_sql).
        paused = [self.quote_name(table) for table in tables if table in triggered]
        statements = [f"ALTER TABLE {table} DISABLE TRIGGER USER;" for table in paused]
        if reset_sequences:  # Django's TRUNCATE … RESTART IDENTITY, with the same triggers paused
            statements += super().sql_flush(
                style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
            return statements + [f"ALTER TABLE {table} ENABLE TRIGGER USER;" for table in paused]
        # one statement list in one round trip (psycopg runs several when there are no parameters)
        statements.append(" ".join(f"DELETE FROM {self.quote_name(table)};" for table in tables))  # noqa: S608 (table names from Django, quoted)
        # the deferred foreign-key checks run now (every table is empty), or the ALTERs below would
        # refuse a table with pending trigger events
        statements.append("SET CONSTRAINTS ALL IMMEDIATE;")
        statements += [f"ALTER TABLE {table} ENABLE TRIGGER USER;" for table in paused]
        return statements

    def execute_sql_flush(self, sql_list):
        # A live server's thread may still be finishing a request of the test that just ended (OHIF
        # keeps fetching) and write an audit row while holding a report row: with the flush's
        # trigger ALTERs that is a deadlock, and PostgreSQL may pick the flush. The flush's own
        # transaction was rolled back; once the request has finished the flush goes through.
        for attempt in range(5):
            try:
                return super().execute_sql_flush(sql_list)
            except OperationalError as error:
                if "deadlock detected" not in str(error) or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations


_post_migrate_emit = flush_command.emit_post_migrate_signal
# the table an INSERT or UPDATE of Django's writes (its SQL quotes the name)
_WRITE = re.compile(r'\s*(?:INSERT INTO|UPDATE) "([^"]+)"')


def _flush_post_migrate(verbosity, interactive, db, **kwargs) -> None:
    """The flush command's post_migrate: skipped when its flush kept the seeded tables, else sent,
    and what it seeded recorded for the next flush. (Only the flush command's name is replaced;
    migrate sends post_migrate as always.)"""
    ops = connections[db].ops
    if not isinstance(ops, DatabaseOperations):
        _post_migrate_emit(verbosity, interactive, db, **kwargs)
        return
    if ops.seeded_kept:
        ops.seeded_kept = False
        return
    written: set[str] = set()

    def tables_written(execute, sql, params, many, context):
        if match := _WRITE.match(sql):
            written.add(match[1])
        return execute(sql, params, many, context)

    with connections[db].execute_wrapper(tables_written):
        _post_migrate_emit(verbosity, interactive, db, **kwargs)
    ops.seeded_record(written)


flush_command.emit_post_migrate_signal = _flush_post_migrate
