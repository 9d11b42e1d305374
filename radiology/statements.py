"""ORM statements compiled once per process, then run with each request's values.

Building and compiling a queryset is pure Python: ``filter()`` resolves every lookup
(``Query.build_filter``), and ``as_sql`` walks the tree again, every time. On the worklist's rows
partial that was ~45 % of the request's CPU under cProfile — eleven small queries, each compiled anew
though its SQL differs from the last request's only in its values (docs/worklist-fanout.md, sixth
pass). A ``Statement`` keeps what the compiler made for a *key* — the SQL, its parameters and the
columns' converters — and runs it again through Django's cursor (the same connection, transaction,
pool and query logging as the ORM's own).

What varies per call is either

* a **slot**: a value substituted into the compiled parameters — ``build`` is handed a marker in its
  place (``SLOT_ID``: an int sentinel; ``SLOT_IDS``: an id list, matched with the ``any_of`` lookup
  below, so 3 ids and 100 ids are one statement), or
* part of the **key**: whatever else shapes the query (filters, an eligibility ``Q``: ``q_key``).

The caller's key must determine everything ``build`` makes besides its slots: a key that stands for
less would hand one request another's SQL. So keys are built from the very values passed to
``build`` (``q_key`` walks a ``Q``'s tree and refuses what it cannot key), and the tests run every
statement against the ORM's own answer (tests/test_statements.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import count
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, ForeignObject, Lookup, Model, Q, QuerySet

# How many compiled statements a process keeps (oldest out first): a few per reader and filter set.
STATEMENT_CACHE_SIZE = 8192


class StatementError(ValueError):
    """A statement that cannot be compiled once: a slot lost in compilation, an unkeyable value."""


@Field.register_lookup
class AnyOf(Lookup):
    """``column__any_of=[…]``: one parameter for the whole list — ``= ANY(%s)`` on PostgreSQL, a
    ``json_each`` on SQLite — so a statement's SQL does not change with the list's length (``__in``
    writes one placeholder per value, and psycopg re-parses a query of more than 50 parameters on every
    execution). An empty list matches nothing, as ``__in`` does."""

    lookup_name = "any_of"
    prepare_rhs = False  # the list is the parameter: kept whole

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s)", [*lhs_params, self.rhs]

    def as_sqlite(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        values = self.rhs if isinstance(self.rhs, _IdsMarker) else json.dumps(list(self.rhs))
        return f"{lhs} IN (SELECT value FROM json_each(%s))", [*lhs_params, values]  # noqa: S608 (lhs: a column the compiler quoted)


# a foreign key's lookups are its own (``ForeignObject.get_class_lookups``), not the Field's
ForeignObject.register_lookup(AnyOf)


class _IdsMarker(list):
    """The stand-in ``build`` gets for an id-list slot: a list of one sentinel. The ORM copies a list
    value (``Query.resolve_lookup_value`` keeps its type), so it is found again by type and content."""


# An int slot's stand-in: far outside any id, unique per statement compile, found again by value.
_SENTINELS = count(-(2**62))


@dataclass(frozen=True)
class _Compiled:
    sql: str | None  # None: matches nothing (Django's EmptyResultSet: no query is sent)
    params: tuple
    slots: tuple[tuple[int, str, bool], ...]  # (position in params, slot name, is an id list)
    names: tuple[str, ...]  # the columns' names (a ``values()`` queryset's keys)
    columns: tuple  # the select's expressions, for their converters
    width: int | None  # the select's own columns when Django added ordering columns to it
    joins_as_written: bool = False  # PostgreSQL plans its joins in the order the SQL writes them


# PostgreSQL searches every order of a statement's joins when it plans it (join_collapse_limit, 8 by
# default), and plans each statement anew (Django binds parameters client-side, so nothing is
# prepared). For a worklist page's rows — the studies by id, then seven one-to-one lookups — that
# search was 4.6 ms of planning on a quiet core and 8-14 ms under load, against 0.1-1.9 ms executing
# (docs/worklist-fanout.md, "Seventh pass"). SET LOCAL lasts to the end of the
# transaction, so the setting is put back after the statement; in autocommit the three statements
# are one implicit transaction (the simple query protocol, as Django's client-side cursor sends).
def joins_as_written(sql: str) -> str:
    """``sql`` sent so PostgreSQL plans its joins in the written order, the setting put back after
    it; the select's rows are the cursor's second result (``nextset()``)."""
    return f"SET LOCAL join_collapse_limit = 1; {sql}; SET LOCAL join_collapse_limit TO DEFAULT"


class Statement:
    """One query of the application's, compiled once per key and per database vendor (a key of None:
    compiled anew for the call, as the ORM would).

    ``build(*args, **markers)`` returns the queryset (``values()`` or ``values_list()``); ``slots``
    names its per-call values and their kind (``SLOT_ID`` or ``SLOT_IDS``). ``joins_as_written``:
    on PostgreSQL the statement is planned with its joins in the order Django writes them (from the
    queryset's model out), not searched — for statements driven by the model's ids, whose best order
    is that one and whose planning otherwise costs more than running them."""

    def __init__(
        self, name: str, build: Callable[..., QuerySet], *, joins_as_written: bool = False, **slots: str
    ):
        self.name, self.build, self.slots = name, build, slots
        self.joins_as_written = joins_as_written
        self._cache: dict[Hashable, _Compiled] = {}
        self._lock = threading.Lock()

    def rows(
        self, key: Hashable = (), *args: Any, using: str = DEFAULT_DB_ALIAS, **values: Any
    ) -> list[tuple]:
        """The rows as tuples, each column converted as the ORM converts it."""
        return self._run(self._compiled(key, args, using), using, values)

    def values(
        self, key: Hashable = (), *args: Any, using: str = DEFAULT_DB_ALIAS, **values: Any
    ) -> list[dict]:
        """The rows as dicts, as ``values()`` makes them."""
        compiled = self._compiled(key, args, using)
        return [dict(zip(compiled.names, row, strict=True)) for row in self._run(compiled, using, values)]

    def flat(self, key: Hashable = (), *args: Any, using: str = DEFAULT_DB_ALIAS, **values: Any) -> list:
        """The first column of each row (``values_list(…, flat=True)``)."""
        return [row[0] for row in self.rows(key, *args, using=using, **values)]

    @staticmethod
    def _run(compiled: _Compiled, using: str, values: dict[str, Any]) -> list[tuple]:
        if compiled.sql is None:
            return []
        params = list(compiled.params)
        for position, slot, is_list in compiled.slots:
            params[position] = list(values[slot]) if is_list else int(values[slot])
        connection = connections[using]
        if connection.vendor == "sqlite":
            params = [json.dumps(p) if isinstance(p, list) else p for p in params]
        with connection.cursor() as cursor:
            if compiled.joins_as_written and connection.vendor == "postgresql":
                cursor.execute(joins_as_written(compiled.sql), params)
                cursor.nextset()  # past the SET: the select's rows
            else:
                cursor.execute(compiled.sql, params)
            fetched = cursor.fetchall()
        if compiled.width is not None:
            fetched = [row[: compiled.width] for row in fetched]
        return _converted(fetched, compiled.columns, connection)

    def _compiled(self, key: Hashable, args: tuple, using: str) -> _Compiled:
        if key is None:  # no key stands for these arguments: compiled for this call only
            return self._compile(args, using)
        cache_key = (connections[using].vendor, using, key)
        compiled = self._cache.get(cache_key)
        if compiled is None:
            compiled = self._compile(args, using)
            with self._lock:
                if len(self._cache) >= STATEMENT_CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))  # the oldest (dicts keep insertion order)
                self._cache[cache_key] = compiled
        return compiled

    def _compile(self, args: tuple, using: str) -> _Compiled:
        markers = {
            name: _IdsMarker([next(_SENTINELS)]) if kind == SLOT_IDS else next(_SENTINELS)
            for name, kind in self.slots.items()
        }
        queryset = self.build(*args, **markers)
        query = queryset.query
        compiler = query.get_compiler(using)
        names = tuple(query.selected or (*query.extra_select, *query.values_select, *query.annotation_select))
        try:
            sql, params = compiler.as_sql()
            if not sql:
                raise EmptyResultSet
        except EmptyResultSet:
            return _Compiled(None, (), (), names, (), None)
        params = tuple(params)
        slots = tuple(_slot_position(self.name, params, name, marker) for name, marker in markers.items())
        columns = tuple(s[0] for s in compiler.select[: compiler.col_count])
        width = compiler.col_count if compiler.has_extra_select else None
        return _Compiled(sql, params, slots, names, columns, width, self.joins_as_written)


SLOT_ID = "id"
SLOT_IDS = "ids"


def _slot_position(statement: str, params: tuple, name: str, marker) -> tuple[int, str, bool]:
    is_list = isinstance(marker, _IdsMarker)
    kind = _IdsMarker if is_list else int
    found = [i for i, p in enumerate(params) if type(p) is kind and p == marker]
    if len(found) != 1:
        raise StatementError(
            f"{statement}: slot {name!r} appears {len(found)} times in the compiled parameters, not once"
        )
    return found[0], name, is_list


def _converted(rows: list[tuple], columns: tuple, connection) -> list[tuple]:
    """Each column converted as ``SQLCompiler.apply_converters`` does, with this thread's connection
    (converters are looked up per call: the compiled statement is shared between threads)."""
    converters = []
    for i, column in enumerate(columns):
        if column is None:
            continue
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if found:
            converters.append((i, found, column))
    if not converters:
        return rows
    converted = []
    for row in rows:
        row = list(row)
        for i, functions, column in converters:
            value = row[i]
            for function in functions:
                value = function(value, column, connection)
            row[i] = value
        converted.append(tuple(row))
    return converted


# --- keys -------------------------------------------------------------------------------------------

_PLAIN = (int, str, bool, float, type(None), date, datetime, time, timedelta)


def keyed(queryset: QuerySet, key: Hashable) -> QuerySet:
    """Mark a constant queryset used as a value in a ``Q`` (a subquery) with the key that stands for it
    in ``q_key``: the caller promises the queryset is always the same for that key."""
    queryset.statement_key = key
    return queryset


def q_key(q: Q) -> Hashable:
    """A hashable key that determines ``q`` (connector, negation, every lookup and value in order);
    ``StatementError`` for a value it cannot key (an unmarked queryset, an expression)."""
    children = tuple(q_key(child) if isinstance(child, Q) else _lookup_key(child) for child in q.children)
    return (q.connector, q.negated, children)


def _lookup_key(child) -> tuple:
    lookup, value = child
    return (lookup, value_key(value))


def value_key(value) -> Hashable:
    """``value`` as a key: plain values with their type (``1``, ``True`` and ``1.0`` are one dict key
    otherwise), collections element by element, a model instance by its label and pk."""
    if isinstance(value, _PLAIN):
        return (type(value).__name__, value)
    if isinstance(value, list | tuple | set | frozenset):
        items = tuple(map(value_key, value))
        return (
            type(value).__name__,
            tuple(sorted(items, key=repr)) if isinstance(value, set | frozenset) else items,
        )
    if isinstance(value, Model):
        return ("model", value._meta.label, value.pk)
    if isinstance(value, QuerySet) and hasattr(value, "statement_key"):
        return ("queryset", value.statement_key)
    raise StatementError(f"cannot key a {type(value).__name__} in a statement")
