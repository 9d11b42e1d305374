"""Django's PostgreSQL backend with one change for the test suite: a flush DELETEs instead of
TRUNCATEs (radiology.settings.test selects it when the suite runs on PostgreSQL).

Every transactional test ends with a flush of all ~150 tables. TRUNCATE gives each table and index
a new file, which cost 3.6 s per flush at load 5 on the 2-core CI machine (measured with cProfile
over `manage.py flush`; 0.7 s with DELETE): with a few hundred transactional tests that was minutes
of `make test`. The rows a test leaves are few, so DELETE is the cheaper reset. Django's foreign
keys on PostgreSQL are DEFERRABLE INITIALLY DEFERRED and the flush runs in one transaction, so the
order of the DELETEs does not matter. Tables whose own triggers refuse a DELETE (the append-only
audit log, final reports: radiology/db.py) have those triggers paused for the flush.
Production never uses this module."""

import time

from django.db import OperationalError
from django.db.backends.postgresql import base

# Tables with triggers of their own (not the internal ones that enforce foreign keys).
_TRIGGERED_TABLES = """
SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE NOT t.tgisinternal AND c.relnamespace = 'public'::regnamespace
"""


class DatabaseOperations(base.DatabaseOperations):
    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if not tables:
            return []
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
