"""Which commits a read saw: PostgreSQL's snapshots and transaction ids, so that a page can tell
whether an event it receives is already in the rows it fetched (docs/worklist-fanout.md, "A
removal counted twice").

A statement's snapshot (``pg_current_snapshot()``, as text ``xmin:xmax:xip,…``) names the
transactions whose effects it sees: every id below ``xmin``, and those below ``xmax`` not listed
as in progress. A writing transaction's id (``pg_current_xact_id_if_assigned()``) is visible in a
snapshot exactly when its commit came before that snapshot was taken. Elsewhere (SQLite, the
embedded default) there are no snapshots: both are None and callers keep their older behaviour."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import CharField, Expression


class CurrentSnapshot(Expression):
    """The statement's own snapshot as a column (NULL but on PostgreSQL): taken with the rows it
    describes, in the same statement, so nothing can commit between the two."""

    output_field = CharField()

    def as_sql(self, compiler, connection):
        return "NULL", []

    def as_postgresql(self, compiler, connection):
        return "pg_current_snapshot()::text", []


def writer_xid(using: str = DEFAULT_DB_ALIAS) -> str | None:
    """The id of the transaction in progress if it has written anything (its commit is the one an
    event after it announces); None outside PostgreSQL, outside a transaction, or before a write."""
    connection = connections[using]
    if connection.vendor != "postgresql" or not connection.in_atomic_block:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id_if_assigned()::text")
        (xid,) = cursor.fetchone()
    return xid
