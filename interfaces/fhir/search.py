"""FHIR R4 search (https://hl7.org/fhir/R4/search.html) over Django querysets: parameter parsing,
the four parameter types ReadRoom serves (token, date, string, reference), and searchset Bundles with
paging.

What the specification leaves to the server, decided here (docs/api.md):

* **Unknown or unsupported parameters** are ignored by default (lenient, as the spec recommends) and
  named in an OperationOutcome entry of the Bundle (``search.mode = outcome``); the self link lists
  only what was applied. ``Prefer: handling=strict`` turns them into a 400. A *known* parameter with
  a modifier ReadRoom does not support, or a malformed value, is always a 400 (the spec: a server
  SHALL reject an unsupported modifier).
* **Repeated parameters** are AND, comma-separated values OR (``\\,`` escapes a comma).
* **Dates without a time zone** (``date=2026-03-01``) are the facility's wall clock, as QIDO's
  StudyDate is: each record is compared in its own facility's zone. With an offset they are instants.
  Prefixes eq, ne, gt, lt, ge, le, sa, eb as the spec defines them over the value's implicit range
  (``2026-03`` is the whole month); ``ap`` is refused.
* **Paging** is by keyset on the id, newest first: ``_count`` (default 50, at most 200, 0 for the
  total alone) and an opaque ``_cursor`` in the next/previous links. A walk over the next links visits
  every match exactly once even while new records arrive (they sort before page one).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from urllib.parse import urlencode

from django.db.models import Model, Q, QuerySet
from django.utils import timezone as django_timezone

from facilities.selectors import local_time_q
from interfaces.fhir.identifiers import NOTHING, Token

DEFAULT_COUNT = 50
MAX_COUNT = 200
# Result parameters the server understands (not search parameters: they shape the answer).
RESULT_PARAMETERS = frozenset({"_count", "_cursor", "_format", "_pretty", "_total", "_summary"})
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_DATE = re.compile(
    r"(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2}):(?P<minute>\d{2})(:(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<zone>Z|[+\- ]\d{2}:\d{2})?)?)?)?"
)


class SearchError(Exception):
    """A request the server refuses with 400 and an OperationOutcome naming the parameter."""

    def __init__(self, text: str, *, code: str = "invalid", parameter: str = ""):
        super().__init__(text)
        self.text, self.code, self.parameter = text, code, parameter


# --- parameter values ----------------------------------------------------------------------------


def split_values(raw: str) -> list[str]:
    """Comma-separated alternatives; ``\\,`` is a literal comma (search.html §3.1.1.7)."""
    values, current, escaped = [], [], False
    for char in raw:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return [v for v in values if v != ""]


def token_value(raw: str) -> Token:
    """``code``, ``system|code``, ``|code`` (no system) or ``system|`` (any code of the system)."""
    system, bar, code = _split_unescaped_bar(raw)
    if not bar:
        return Token(system=None, code=raw.replace("\\|", "|"))
    return Token(system=system, code=code or None)


def _split_unescaped_bar(raw: str) -> tuple[str, bool, str]:
    index = next((i for i, c in enumerate(raw) if c == "|" and (i == 0 or raw[i - 1] != "\\")), -1)
    if index < 0:
        return raw, False, ""
    return raw[:index].replace("\\|", "|"), True, raw[index + 1 :].replace("\\|", "|")


@dataclass(frozen=True)
class DateValue:
    """A date parameter value: its prefix and its implicit range ``[start, end)`` — aware when the
    value carried a zone, naive (the facility's wall clock) otherwise."""

    prefix: str
    start: datetime
    end: datetime

    @property
    def zoned(self) -> bool:
        return self.start.tzinfo is not None


def date_value(raw: str, parameter: str) -> DateValue:
    prefix = raw[:2] if raw[:2] in DATE_PREFIXES else "eq"
    text = raw[2:] if raw[:2] in DATE_PREFIXES else raw
    if prefix == "ap":
        raise SearchError(
            f"{parameter}: the 'ap' prefix is not supported", code="not-supported", parameter=parameter
        )
    match = _DATE.fullmatch(text)
    if match is None:
        raise SearchError(
            f"{parameter}: {text!r} is not a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD, "
            "YYYY-MM-DDThh:mm[:ss][Z|±hh:mm])",
            parameter=parameter,
        )
    try:
        start, end = _date_range(match)
    except ValueError as error:
        raise SearchError(
            f"{parameter}: {text!r} is not a valid date ({error})", parameter=parameter
        ) from None
    return DateValue(prefix=prefix, start=start, end=end)


def _date_range(match: re.Match) -> tuple[datetime, datetime]:
    year = int(match["year"])
    if match["month"] is None:
        return datetime(year, 1, 1), datetime(year + 1, 1, 1)
    month = int(match["month"])
    if match["day"] is None:
        start = datetime(year, month, 1)
        return start, datetime(year + month // 12, month % 12 + 1, 1)
    day = datetime(year, month, int(match["day"]))
    if match["hour"] is None:
        return day, day + timedelta(days=1)
    start = day.replace(hour=int(match["hour"]), minute=int(match["minute"]))
    if match["second"] is None:
        width = timedelta(minutes=1)
    else:
        start = start.replace(second=int(match["second"]))
        width = timedelta(seconds=1)
        if match["fraction"]:
            start = start.replace(microsecond=int(float(match["fraction"]) * 1_000_000))
            width = timedelta(microseconds=1)
    if zone := match["zone"]:
        start = start.replace(tzinfo=_zone(zone))
    return start, start + width


def _zone(text: str) -> timezone:
    if text == "Z":
        return UTC
    # an unencoded "+" in a query string arrives as a space
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _bounds(prefix: str, start, end) -> tuple:
    """``[lower, upper)`` of what a prefix accepts, for a value whose implicit range is
    ``[start, end)`` (search.html §3.1.1.4.2: gt/sa after its end, lt/eb before its start, ge from its
    start, le up to its end; eq and ne the range itself, ne negated by the caller). None: unbounded."""
    return {
        "eq": (start, end),
        "ne": (start, end),
        "gt": (end, None),
        "sa": (end, None),
        "ge": (start, None),
        "lt": (None, start),
        "eb": (None, start),
        "le": (None, end),
    }[prefix]


def _between(field: str, lower, upper) -> Q:
    where = Q(**{f"{field}__isnull": False})
    if lower is not None:
        where &= Q(**{f"{field}__gte": lower})
    if upper is not None:
        where &= Q(**{f"{field}__lt": upper})
    return where


def _prefixed(prefix: str, field: str, where: Q) -> Q:
    return Q(**{f"{field}__isnull": False}) & ~where if prefix == "ne" else where


def date_q(value: DateValue, field: str, *, facility_path: str = "facility") -> Q:
    """Records whose ``field`` (an instant) satisfies the prefix against the value's range: an
    instant when the value had a zone, else the wall clock at each record's facility."""
    lower, upper = _bounds(value.prefix, value.start, value.end)
    if value.zoned:
        where = _between(field, lower, upper)
    else:
        where = local_time_q(field, lower, upper, facility_path=facility_path)
    return _prefixed(value.prefix, field, where)


def day_q(value: DateValue, field: str) -> Q:
    """The same prefixes over a date field (a birth date has no time or zone: compared by day)."""
    start: date = value.start.date()
    end: date = (value.end - timedelta(microseconds=1)).date() + timedelta(days=1)
    return _prefixed(value.prefix, field, _between(field, *_bounds(value.prefix, start, end)))


def string_q(value: str, modifier: str, fields: Sequence[str]) -> Q:
    """FHIR string matching: by default case-insensitive "starts with" on any of ``fields``;
    ``:exact`` the whole value, case-sensitive; ``:contains`` anywhere, case-insensitive."""
    lookup = {"": "istartswith", "exact": "exact", "contains": "icontains"}[modifier]
    where = NOTHING
    for name in fields:
        where |= Q(**{f"{name}__{lookup}": value})
    return where


def reference_id(raw: str, resource_type: str, parameter: str) -> int | None:
    """``123``, ``Patient/123`` or an absolute URL ending so; None for a valid FHIR id that cannot
    be one of ours (which matches nothing). Another resource type is a 400."""
    parts = raw.rstrip("/").split("/")
    if len(parts) >= 2:
        kind, identifier = parts[-2], parts[-1]
        if kind != resource_type:
            raise SearchError(
                f"{parameter}: references a {kind}; it takes a {resource_type} reference",
                parameter=parameter,
            )
    else:
        identifier = parts[-1]
    if not FHIR_ID.fullmatch(identifier):
        raise SearchError(f"{parameter}: {raw!r} is not a resource id", parameter=parameter)
    return int(identifier) if identifier.isdigit() else None


def id_q(raw: str, parameter: str = "_id") -> Q:
    if not FHIR_ID.fullmatch(raw):
        raise SearchError(f"{parameter}: {raw!r} is not a resource id", parameter=parameter)
    return Q(pk=int(raw)) if raw.isdigit() else NOTHING


# --- parameter definitions -----------------------------------------------------------------------

ParameterKind = str  # "token" | "date" | "string" | "reference"


@dataclass(frozen=True)
class SearchParameter:
    """One search parameter of one resource type: how a single value (one of a comma list) becomes a
    Q. ``where(value, modifier)`` gets the parsed value (Token, DateValue, str or reference id)."""

    name: str
    kind: ParameterKind
    where: Callable[[object, str], Q]
    documentation: str
    definition: str = ""  # the canonical SearchParameter it implements
    modifiers: tuple[str, ...] = ()
    target: str = ""  # a reference parameter's resource type

    def q(self, raw: str, modifier: str) -> Q:
        label = f"{self.name}:{modifier}" if modifier else self.name
        if modifier and modifier not in self.modifiers:
            raise SearchError(
                f"The {self.name!r} parameter has the modifier {modifier!r}, which is not supported",
                code="not-supported",
                parameter=label,
            )
        values = split_values(raw)
        if not values:
            return Q()
        where = NOTHING
        for value in values:
            where |= self.where(self._parse(value, label), modifier)
        return where

    def _parse(self, value: str, label: str):
        if self.kind == "token":
            return token_value(value)
        if self.kind == "date":
            return date_value(value, label)
        if self.kind == "reference":
            return reference_id(value, self.target, label)
        return value


def standard(resource_type: str, name: str) -> str:
    return f"http://hl7.org/fhir/SearchParameter/{resource_type}-{name}"


def id_parameter(resource_type: str) -> SearchParameter:
    return SearchParameter(
        "_id",
        "token",
        lambda token, _: id_q(token.code or "") if token.system is None else NOTHING,
        f"The {resource_type}'s logical id (comma-separated for several)",
        definition="http://hl7.org/fhir/SearchParameter/Resource-id",
    )


@dataclass(frozen=True)
class ResourceSearch:
    """What one resource type supports, and how: its parameters, the records the caller may see, and
    the mapping. The CapabilityStatement is written from these, so it says what is served."""

    type: str
    parameters: tuple[SearchParameter, ...]
    visible: Callable[[object], QuerySet]  # user → their records, with what ``resource`` reads loaded
    resource: Callable[[Model], dict]
    documentation: str
    chains: tuple[str, ...] = ()  # e.g. "patient.identifier", for the CapabilityStatement's text
    by_name: dict[str, SearchParameter] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.parameters})

    @property
    def profile(self) -> str:
        return f"http://hl7.org/fhir/StructureDefinition/{self.type}"


# --- one search ----------------------------------------------------------------------------------


@dataclass
class SearchRequest:
    """The request as understood: applied parameters (as sent), ignored ones, and the paging."""

    applied: list[tuple[str, str]]
    ignored: list[str]
    where: Q
    count: int
    cursor: tuple[str, int] | None
    total_wanted: bool


def search_request(
    definition: ResourceSearch, params: Iterable[tuple[str, str]], *, strict: bool
) -> SearchRequest:
    applied, ignored, where = [], [], Q()
    count, cursor, total_wanted = DEFAULT_COUNT, None, True
    for key, raw in params:
        if "\x00" in key or "\x00" in raw:  # no text here holds one; PostgreSQL refuses it in a query
            raise SearchError("A parameter contains a NUL character", parameter=key.replace("\x00", ""))
        name, _, modifier = key.partition(":")
        if key in RESULT_PARAMETERS:
            if key == "_count":
                count = _count(raw)
            elif key == "_cursor":
                cursor = _cursor(raw)
            elif key == "_total":
                total_wanted = _total(raw)
            elif key == "_summary":
                count = _summary(raw, count)
            continue
        parameter = definition.by_name.get(name)
        if parameter is None:
            if strict:
                raise SearchError(
                    f"{definition.type} has no search parameter {key!r} on this server (see /metadata)",
                    code="not-supported",
                    parameter=key,
                )
            ignored.append(key)
            continue
        if raw == "":
            continue  # an empty value constrains nothing
        where &= parameter.q(raw, modifier)
        applied.append((key, raw))
    return SearchRequest(applied, ignored, where, count, cursor, total_wanted)


def _count(raw: str) -> int:
    if not raw.isdigit():
        raise SearchError(f"_count: {raw!r} is not a whole number of entries", parameter="_count")
    return min(int(raw), MAX_COUNT)


def _cursor(raw: str) -> tuple[str, int]:
    direction, _, boundary = raw.partition(".")
    if direction not in ("after", "before") or not boundary.isdigit():
        raise SearchError(
            "_cursor: not one this server gave (follow the Bundle's links)", parameter="_cursor"
        )
    return direction, int(boundary)


def _total(raw: str) -> bool:
    if raw not in ("none", "estimate", "accurate"):
        raise SearchError("_total: none, estimate or accurate", parameter="_total")
    return raw != "none"


def _summary(raw: str, count: int) -> int:
    if raw == "count":
        return 0
    if raw == "false":
        return count
    raise SearchError(
        "_summary: only 'count' (the total alone) and 'false' are supported",
        code="not-supported",
        parameter="_summary",
    )


@dataclass
class Page:
    rows: list[Model]
    total: int | None
    after: int | None  # the next page's cursor boundary
    before: int | None  # the previous page's


def page_of(records: QuerySet, request: SearchRequest) -> Page:
    """Keyset paging, newest (highest id) first: each page asks for one row more than it shows to
    know whether another follows."""
    total = records.count() if request.total_wanted else None
    if request.count == 0:
        return Page([], total, None, None)
    direction, boundary = request.cursor or ("after", None)
    if direction == "after":
        newer = records.filter(pk__lt=boundary) if boundary is not None else records
        rows = list(newer.order_by("-pk")[: request.count + 1])
        more, rows = len(rows) > request.count, rows[: request.count]
        has_previous = boundary is not None and records.filter(pk__gte=boundary).exists()
        has_next = more
    else:
        rows = list(records.filter(pk__gt=boundary).order_by("pk")[: request.count + 1])
        has_previous, rows = len(rows) > request.count, rows[: request.count][::-1]
        has_next = records.filter(pk__lte=boundary).exists()
    return Page(
        rows,
        total,
        after=rows[-1].pk if rows and has_next else (boundary if not rows and has_next else None),
        before=rows[0].pk if rows and has_previous else (boundary if not rows and has_previous else None),
    )


def searchset(
    definition: ResourceSearch,
    request: SearchRequest,
    page: Page,
    *,
    base: str,
    resources: list[dict],
) -> dict:
    """The searchset Bundle: total, self/first/next/previous links, fullUrls, search modes, and an
    OperationOutcome entry naming the parameters that were ignored."""
    url = f"{base}/{definition.type}"

    def link(relation: str, cursor: str | None) -> dict:
        query = [*request.applied, ("_count", str(request.count))]
        if cursor:
            query.append(("_cursor", cursor))
        return {"relation": relation, "url": f"{url}?{urlencode(query)}"}

    current = f"{request.cursor[0]}.{request.cursor[1]}" if request.cursor else None
    links = [link("self", current), link("first", None)]
    if page.after is not None:
        links.append(link("next", f"after.{page.after}"))
    if page.before is not None:
        links.append(link("previous", f"before.{page.before}"))
    entries = [
        {"fullUrl": f"{url}/{resource['id']}", "resource": resource, "search": {"mode": "match"}}
        for resource in resources
    ]
    if request.ignored:
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": operation_outcome_resource(
                    [
                        issue(
                            "warning",
                            "not-supported",
                            f"{definition.type} has no search parameter {name!r} here; it was ignored",
                            name,
                        )
                        for name in request.ignored
                    ]
                ),
                "search": {"mode": "outcome"},
            }
        )
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": django_timezone.now().isoformat()},
        "type": "searchset",
        "total": page.total,
        "link": links,
        "entry": entries,
    }
    return {key: value for key, value in bundle.items() if value is not None}


def issue(severity: str, code: str, text: str, parameter: str = "") -> dict:
    entry = {"severity": severity, "code": code, "diagnostics": text}
    if parameter:
        entry["location"] = [f"http.{parameter}"]  # R4's convention for a request parameter
    return entry


def operation_outcome_resource(issues: list[dict]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": issues}
