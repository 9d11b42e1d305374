"""radiology.statements: ORM statements compiled once per process, run with each call's values
(docs/worklist-fanout.md, sixth pass)."""

from __future__ import annotations

import pytest
from django.db.models import Q
from django.db.models.sql.compiler import SQLCompiler
from django.utils import timezone

from imaging.models import Study
from radiology.statements import SLOT_ID, SLOT_IDS, Statement, StatementError, keyed, q_key
from tests.worklist.conftest import make_study
from worklist.rows import READER_ROW_COLUMNS
from worklist.services import study_claim, study_route

pytestmark = pytest.mark.django_db


def routed(facility, **kwargs):
    study = make_study(facility, **kwargs)
    study_route(study_id=study.pk)
    return study


@pytest.fixture
def compiled_sql(monkeypatch):
    """Every SQL the ORM's compiler writes while the test runs."""
    seen: list[str] = []
    original = SQLCompiler.as_sql

    def as_sql(self, *args, **kwargs):
        sql, params = original(self, *args, **kwargs)
        seen.append(sql)
        return sql, params

    monkeypatch.setattr(SQLCompiler, "as_sql", as_sql)
    return seen


def test_the_rows_partial_compiles_its_worklist_queries_once_per_process(
    verified_client, neuro_reader, chicago, compiled_sql
):
    # given a reader with a held study and unclaimed ones, whose rows partial has been asked once
    now = timezone.now()
    held = routed(chicago, code="70450", text="CT HEAD", completed_at=now)
    study_claim(study_id=held.pk, user=neuro_reader, at=now)
    for _ in range(3):
        routed(chicago, code="70450", text="CT HEAD", completed_at=now)
    client = verified_client(neuro_reader)
    first = client.get("/worklist/rows/").content.decode()
    # when it is asked again
    compiled_sql.clear()
    again = client.get("/worklist/rows/").content.decode()
    # then no query over the studies was compiled anew (held, counts, page ids, rows)
    assert [sql for sql in compiled_sql if '"imaging_study"' in sql] == []
    assert again.count('data-testid="study-row"') == first.count('data-testid="study-row"') == 4
    # and a new study shows at once: the statements hold SQL, never results
    routed(chicago, code="70450", text="CT HEAD", completed_at=timezone.now())
    assert client.get("/worklist/rows/").content.decode().count('data-testid="study-row"') == 5


def test_a_statement_answers_what_the_orm_answers_for_each_calls_values(chicago):
    studies = [make_study(chicago, code="70450", text="CT HEAD") for _ in range(4)]
    rows = Statement(
        "test.rows",
        lambda ids: Study.objects.filter(pk__any_of=ids).values(*READER_ROW_COLUMNS),
        ids=SLOT_IDS,
    )
    for ids in ([studies[0].pk], [s.pk for s in studies[1:]], [], [studies[3].pk, 10**9]):
        expected = list(Study.objects.filter(pk__in=ids).values(*READER_ROW_COLUMNS))
        assert sorted(rows.values(ids=ids), key=lambda r: r["id"]) == sorted(expected, key=lambda r: r["id"])
    one = Statement(
        "test.one", lambda pk: Study.objects.filter(pk=pk).values_list("pk", flat=True), pk=SLOT_ID
    )
    # the same compiled statement, another value: never the first call's answer
    assert one.flat(pk=studies[0].pk) == [studies[0].pk]
    assert one.flat(pk=studies[1].pk) == [studies[1].pk]


def test_the_row_statements_are_planned_with_their_joins_as_written_and_put_the_setting_back(chicago):
    """The id-driven row statements (the API's, the page's) skip PostgreSQL's join-order search:
    planning it cost more than running them (radiology.statements). Their rows are the ORM's, and
    the setting is back to the server's own after each, inside a transaction as in autocommit."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from worklist.api import _ENTRY_ROWS, WORKLIST_ENTRY_COLUMNS
    from worklist.rows import _READER_ROWS

    ids = [routed(chicago, code="70450", text="CT HEAD").pk for _ in range(3)]
    for statement, columns in ((_ENTRY_ROWS, WORKLIST_ENTRY_COLUMNS), (_READER_ROWS, READER_ROW_COLUMNS)):
        expected = sorted(Study.objects.filter(pk__in=ids).values(*columns), key=lambda r: r["id"])
        with transaction.atomic(), CaptureQueriesContext(connection) as sent:
            assert sorted(statement.values(ids=ids), key=lambda r: r["id"]) == expected
            if connection.vendor != "postgresql":
                continue  # SQLite has no join-order search to skip: the plain select
            with connection.cursor() as cursor:
                cursor.execute("SHOW join_collapse_limit")
                assert cursor.fetchone() == ("8",), "the setting leaked into the rest of the transaction"
        assert sent.captured_queries[0]["sql"].startswith("SET LOCAL join_collapse_limit = 1; SELECT")
        assert sent.captured_queries[0]["sql"].endswith("; SET LOCAL join_collapse_limit TO DEFAULT")


def test_a_statement_that_matches_nothing_sends_no_query(django_assert_num_queries):
    nothing = Statement("test.nothing", lambda: Study.objects.none().values_list("pk"))
    with django_assert_num_queries(0):
        assert nothing.rows() == [] and nothing.rows() == []


def test_a_q_is_keyed_by_every_lookup_and_value_and_refuses_what_it_cannot_key():
    assert q_key(Q(facility_id__in=[1, 2])) != q_key(Q(facility_id__in=[1, 3]))
    assert q_key(Q(a=1) | Q(b=2)) != q_key(Q(a=1) & Q(b=2)) != q_key(~(Q(a=1) & Q(b=2)))
    assert q_key(Q(a=1)) != q_key(Q(a=True)) != q_key(Q(a="1"))
    with pytest.raises(StatementError):
        q_key(Q(subspecialty_id__in=Study.objects.values("pk")))
    marked = keyed(Study.objects.values("pk"), "every study")
    assert q_key(Q(pk__in=marked)) == q_key(Q(pk__in=keyed(Study.objects.values("pk"), "every study")))


def test_a_slot_lost_in_compilation_is_an_error_not_a_wrong_query():
    twice = Statement(
        "test.twice", lambda pk: Study.objects.filter(Q(pk=pk) | Q(order_id=pk)).values("pk"), pk=SLOT_ID
    )
    with pytest.raises(StatementError):
        twice.rows(pk=1)


@pytest.mark.parametrize("who", ["reader", "operations"])
def test_the_worklist_api_compiles_its_queries_once_per_process(
    who, verified_client, client, neuro_reader, ops_omar, chicago, compiled_sql
):
    # given a held study and three unclaimed ones, each page of two asked once
    now = timezone.now()
    held = routed(chicago, code="70450", text="CT HEAD", completed_at=now)
    study_claim(study_id=held.pk, user=neuro_reader, at=now)
    for _ in range(3):
        routed(chicago, code="70450", text="CT HEAD", completed_at=now)
    if who == "reader":
        api = verified_client(neuro_reader)
    else:
        client.force_login(ops_omar)
        api = client

    def pages() -> list[tuple[int, list[int]]]:
        bodies = [api.get("/api/v1/worklist/", {"limit": 2, "offset": o}).json() for o in (0, 2)]
        return [(body["count"], [row["id"] for row in body["results"]]) for body in bodies]

    first = pages()
    # when they are asked again
    compiled_sql.clear()
    again = pages()
    # then no query over the studies was compiled anew (held, counts, the page's ids, its rows)
    assert [sql for sql in compiled_sql if '"imaging_study"' in sql] == []
    assert again == first and [count for count, _ in first] == [4, 4]
    assert len({pk for _, ids in first for pk in ids}) == 4
    if who == "reader":
        assert first[0][1][0] == held.pk  # the held study first
