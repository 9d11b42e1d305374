"""A faster ``timestamptz`` loader for Django's psycopg connections (issue 16).

Django registers its own loader for ``timestamptz`` (``psycopg_any.BaseTzLoader``: psycopg's
pure-Python loader, then the connection's time zone put on). psycopg's C loader cannot be
subclassed, so every timestamp a query returns was parsed in Python: ~20 % of the time a worklist
page spent loading its 100 rows (4 timestamps each; bench/worklist --profile). When the connection
is in UTC — Django's sessions always are with ``USE_TZ`` and no per-database ``TIME_ZONE`` —
PostgreSQL writes a timestamptz as ``2026-12-03 14:30:00.123456+00``, which ``datetime.fromisoformat``
(C) parses to the same value. Anything else (another DateStyle, a year past 9999, BC, infinity)
goes to Django's loader unchanged, so the values and errors are Django's own."""

from __future__ import annotations

from datetime import UTC, datetime

try:
    from django.db.backends.postgresql.psycopg_any import BaseTzLoader
except ImportError:  # psycopg 2 or none: nothing to install
    BaseTzLoader = None


if BaseTzLoader is not None:

    class UtcTimestamptzLoader(BaseTzLoader):
        """Django's UTC loader, with PostgreSQL's ISO text in UTC parsed in C."""

        timezone = UTC  # what Django's create_cursor compares: equal, so it keeps this loader

        def load(self, data):
            # "YYYY-MM-DD HH:MM:SS[.ffffff]+00": four-digit year, ISO DateStyle, offset zero
            if data[-3:] == b"+00" and data[4:5] == b"-" and data[10:11] == b" ":
                try:
                    return datetime.fromisoformat(bytes(data).decode()).replace(tzinfo=UTC)
                except ValueError:
                    pass
            return super().load(data)


def timestamptz_loader_install(sender, connection, **kwargs) -> None:
    """``connection_created``: use ``UtcTimestamptzLoader`` on a PostgreSQL connection in UTC."""
    if BaseTzLoader is None or connection.vendor != "postgresql" or connection.timezone is not UTC:
        return
    from psycopg.postgres import types
    from psycopg.pq import Format

    adapters = connection.connection.adapters
    if adapters.get_loader(types["timestamptz"].oid, Format.TEXT) is not UtcTimestamptzLoader:
        adapters.register_loader("timestamptz", UtcTimestamptzLoader)
