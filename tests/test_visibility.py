"""radiology.visibility: a writing transaction's id, and whether a later statement's snapshot sees it."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from facilities.models import Facility
from radiology.visibility import CurrentSnapshot, writer_xid

pytestmark = pytest.mark.django_db(transaction=True)


def _visible(xid: str, snapshot: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_visible_in_snapshot(%s::xid8, %s::pg_snapshot)", [xid, snapshot])
        return cursor.fetchone()[0]


def test_a_writers_id_is_seen_by_a_snapshot_taken_after_its_commit_and_not_before():
    if connection.vendor != "postgresql":
        assert writer_xid() is None
        assert Facility.objects.annotate(s=CurrentSnapshot()).values_list("s", flat=True).first() is None
        return
    # outside a transaction, and inside one before it writes, there is no writer
    assert writer_xid() is None
    with transaction.atomic():
        assert writer_xid() is None
        Facility.objects.create(code="VIS-1", name="Visibility", state="IL", timezone="America/Chicago")
        xid = writer_xid()
        assert xid is not None and xid.isdigit()
        # another connection's statement meanwhile does not see it (a resync answered before the commit)
        during = _snapshot_elsewhere()
        assert not _visible(xid, during)
    # and one after the commit does, as the column the worklist's counts carry says
    assert _visible(xid, _snapshot_elsewhere())
    after = Facility.objects.annotate(s=CurrentSnapshot()).values_list("s", flat=True).get(code="VIS-1")
    assert _visible(xid, after)


def _snapshot_elsewhere() -> str:
    """A statement's snapshot on another connection (Django's connections are per thread)."""
    import threading

    from django.db import connections

    found = {}

    def read() -> None:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT pg_current_snapshot()::text")
                found["snapshot"] = cursor.fetchone()[0]
        finally:
            connections.close_all()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(timeout=30)
    return found["snapshot"]
