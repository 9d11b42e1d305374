"""Database-level rules that Django's migrations cannot keep: triggers (append-only audit log,
immutable final reports and template versions).

They are (re)installed after every ``migrate`` — and after the test runner's flush, which re-sends
post_migrate — rather than in a migration, because SQLite drops a table's triggers whenever a later
migration rebuilds the table. Each statement must be idempotent (CREATE OR REPLACE / DROP … IF EXISTS,
CREATE TRIGGER IF NOT EXISTS)."""

from __future__ import annotations

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
