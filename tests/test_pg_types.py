"""radiology/pg_types.py: timestamps parsed in C give exactly what Django's own loader gives."""

from __future__ import annotations

from datetime import UTC

import pytest
from django.db import connection

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL loader"),
]

VALUES = (
    "2026-12-03 14:30:00.123456+00",
    "2026-12-03 14:30:00+00",
    "2026-03-08 08:30:00.5+00",  # a DST change in Chicago, as UTC
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
)
# what the fast path must leave to Django's loader (it raises, or parses another text)
ODD_VALUES = ("infinity", "-infinity", "0044-03-15 12:00:00+00 BC", "10000-01-01 00:00:00+00")


def _loaded(cursor, value: str):
    try:
        cursor.execute("SELECT %s::timestamptz", [value])
        return cursor.fetchone()[0]
    except Exception as error:  # the comparison is of the error too
        return type(error)


def _djangos(value: str, zone: str = "UTC"):
    # Django's own loader on a cursor of the same connection
    from django.db.backends.postgresql.psycopg_any import register_tzloader

    with connection.connection.cursor() as raw:
        raw.execute(f"SET TIME ZONE '{zone}'")
        register_tzloader(UTC, raw)
        loaded = _loaded(raw, value)
        raw.execute("SET TIME ZONE 'UTC'")
        return loaded


def test_a_utc_connection_parses_timestamps_in_c_with_djangos_results():
    from psycopg.postgres import types
    from psycopg.pq import Format

    from radiology.pg_types import UtcTimestamptzLoader

    with connection.cursor() as cursor:
        # given Django's connection (in UTC): its timestamptz loader is the fast one
        assert connection.connection.adapters.get_loader(types["timestamptz"].oid, Format.TEXT) is (
            UtcTimestamptzLoader
        )
        for value in VALUES + ODD_VALUES:
            # then every value (or error) is Django's own, its time zone the same object
            fast = _loaded(cursor.cursor, value)
            assert fast == _djangos(value), value
            if not isinstance(fast, type):
                assert fast.tzinfo is UTC
        # and a session in another zone (offsets other than +00) is parsed by Django's loader
        cursor.execute("SET TIME ZONE 'America/Chicago'")
        try:
            assert _loaded(cursor.cursor, VALUES[0]) == _djangos(VALUES[0], "America/Chicago")
        finally:
            cursor.execute("SET TIME ZONE 'UTC'")
