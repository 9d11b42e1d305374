"""QIDO-RS (PS3.18 §10.6): query parameters → a filter over the database index.

Matching follows PS3.4 C.2.2.2: single value matching (exact), wildcard matching (``*`` any run,
``?`` one character) for text attributes, UID list matching (``\\`` or ``,`` separated), range
matching on Study Date (``YYYYMMDD-YYYYMMDD``, open either end), and universal matching for an
empty value or a lone ``*``. Patient Name matches case-insensitively (as most archives do: the
same patient is typed in different cases by different systems); other keys are case-sensitive.

Every required matching key of PS3.18 Table 10.6.1-5 is matched, ReferringPhysicianName, StudyTime
and StudyID included. A name that is no DICOM attribute at all, a value a key cannot take (a UID
with a wildcard, a date that is not YYYYMMDD, a number that is not one) or an ``includefield`` of
no attribute answers **400** with the reason. A real attribute that ReadRoom does not index (say
PatientBirthDate) is ignored and named in a ``Warning`` header (PS3.18 §8.3.4.1), so a viewer asking
for more than we index still gets its answer.

``fuzzymatching=true`` is supported for person names (PatientName, ReferringPhysicianName): every word
of the query (split at spaces, ``^`` and ``,``) must begin one of the name's components, in any
order and case — ``john smi`` finds ``SMITH^JOHN``. ``false`` (the default) is literal matching."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db.models import CharField, Exists, F, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Concat, TruncTime

from facilities.models import Facility
from imaging.models import Series
from interfaces.dicom.web_json import attribute_name, attribute_tag

STUDY, SERIES, INSTANCE = "study", "series", "instance"

# Query keys we match on, by the level whose table holds them.
STUDY_KEYS = {
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "AccessionNumber",
    "StudyDate",
    "ModalitiesInStudy",
    "StudyDescription",
    "StudyTime",
    "StudyID",
    "ReferringPhysicianName",
}
SERIES_KEYS = {"SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription"}
INSTANCE_KEYS = {"SOPInstanceUID", "SOPClassUID", "InstanceNumber"}
KEYS_AT = {
    STUDY: STUDY_KEYS,
    SERIES: STUDY_KEYS | SERIES_KEYS,
    INSTANCE: STUDY_KEYS | SERIES_KEYS | INSTANCE_KEYS,
}
# Path from each level's model to the study and the series rows.
STUDY_PATH = {STUDY: "", SERIES: "study__", INSTANCE: "series__study__"}
SERIES_PATH = {SERIES: "", INSTANCE: "series__"}
CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
PERSON_NAME_KEYS = {"PatientName", "ReferringPhysicianName"}
UID_KEYS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}
UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class QueryError(ValueError):
    """A malformed query (QIDO-RS answers 400 with this message)."""


@dataclass(frozen=True)
class QidoRequest:
    level: str
    matches: tuple[tuple[str, str], ...] = ()  # (keyword, value)
    include_all: bool = False
    includefields: frozenset[int] = frozenset()
    limit: int | None = None
    offset: int = 0
    ignored: tuple[str, ...] = field(default=())  # keys we do not match on
    fuzzy: bool = False  # fuzzymatching=true: person names match word by word


def qido_parse(params: list[tuple[str, str]], *, level: str) -> QidoRequest:
    """Parse ``(name, value)`` query pairs (names may be keywords or tags, e.g. ``00100020``).
    Raises QueryError (400) for a name that is no attribute or a value its key cannot take."""
    matches, ignored, includes = [], [], set()
    include_all, limit, offset, fuzzy = False, None, 0, False
    for name, value in params:
        if name == "limit":
            limit = _non_negative(name, value, minimum=1)
        elif name == "offset":
            offset = _non_negative(name, value, minimum=0)
        elif name == "includefield":
            for item in filter(None, (v.strip() for v in value.split(","))):
                if item == "all":
                    include_all = True
                elif (tag := attribute_tag(item)) is not None:
                    includes.add(tag)
                else:
                    raise QueryError(f"includefield {item!r} is not a DICOM attribute keyword or tag")
        elif name == "fuzzymatching":
            if value.strip().lower() not in ("true", "false"):
                raise QueryError(f"fuzzymatching is true or false, not {value!r}")
            fuzzy = value.strip().lower() == "true"
        elif name in CONTROL or name.startswith("_"):
            continue  # "_": a client's cache buster
        else:
            keyword = _query_key(name)
            if keyword in KEYS_AT[level]:
                if value.strip() not in ("", "*"):  # universal matching
                    matches.append((keyword, _checked(keyword, value.strip())))
            else:
                ignored.append(name)
    return QidoRequest(
        level,
        tuple(matches),
        include_all,
        frozenset(includes),
        limit,
        offset,
        tuple(dict.fromkeys(ignored)),
        fuzzy,
    )


def _query_key(name: str) -> str:
    """The keyword of a query key (a keyword, a tag, or a dotted sequence path of either); 400 when
    a part of it is no DICOM attribute: a typo must not silently match everything."""
    parts = name.split(".")
    tags = [attribute_tag(part) for part in parts]
    if any(tag is None for tag in tags):
        raise QueryError(f"{name!r} is not a DICOM attribute keyword or tag, nor a query parameter")
    return attribute_name(tags[0]) if len(parts) == 1 else name


def _checked(keyword: str, value: str) -> str:
    """The value, refused (400) when the key's VR cannot hold it (PS3.4 C.2.2.2: no wildcards in
    UIDs; DA and TM ranges checked when matched)."""
    if keyword in UID_KEYS:
        for uid in _list(value):
            if len(uid) > 64 or not UID.match(uid):
                raise QueryError(f"{keyword} takes UIDs (digits and dots, no wildcards), not {uid!r}")
    if keyword == "StudyTime":
        _time_range(value)
    if keyword == "StudyDate":
        start, dash, end = value.partition("-")
        _dicom_date(start, keyword), _dicom_date(end if dash else start, keyword)
    return value


def _list(value: str) -> list[str]:
    return [u.strip() for u in value.replace(",", "\\").split("\\") if u.strip()]


def _non_negative(name: str, value: str, *, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise QueryError(f"{name} must be an integer, not {value!r}") from None
    if number < minimum:
        raise QueryError(f"{name} must be at least {minimum}")
    return number


# --- matching ------------------------------------------------------------------------------------


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _wildcard_regex(value: str) -> str:
    # Escape by hand: the pattern runs in SQLite (Python re) and PostgreSQL (ARE) alike.
    out = []
    for char in value:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char.isalnum() or char in " _-":
            out.append(char)
        else:
            out.append("\\" + char)
    return "".join(out)


def text_q(field_name: str, value: str) -> Q:
    """Single value or wildcard matching of a text attribute."""
    if not _has_wildcard(value):
        return Q(**{field_name: value})
    head = value[:-1]
    if value.endswith("*") and not _has_wildcard(head):
        return Q(**{f"{field_name}__startswith": head})  # the common case, and it can use an index
    return Q(**{f"{field_name}__regex": f"^{_wildcard_regex(value)}$"})


def uid_list_q(field_name: str, value: str) -> Q:
    return Q(**{f"{field_name}__in": _list(value)})


def int_q(field_name: str, keyword: str, value: str) -> Q:
    try:
        return Q(**{field_name: int(value)})
    except ValueError:
        raise QueryError(f"{keyword} must be an integer, not {value!r}") from None


def person_name_regex(value: str) -> str:
    """PN matching against ``FAMILY^GIVEN^MIDDLE`` (empty trailing components match)."""
    return f"^{_wildcard_regex(value.rstrip('^'))}\\^*$"


def fuzzy_name_regex(value: str) -> str:
    """fuzzymatching=true: every word must begin a component of ``FAMILY^GIVEN^MIDDLE`` (or a
    word inside one), in any order, case-insensitively — a regex of one lookahead per word."""
    words = [w for w in re.split(r"[\s^,]+", value) if w.strip("*")]
    return "^" + "".join(f"(?=(.*[\\^ ])?{_wildcard_regex(w.rstrip('*'))})" for w in words)


def _dicom_time(value: str, *, end: bool) -> time | None:
    """A TM value (HH, HHMM, HHMMSS, HHMMSS.FFFFFF) as the first — or with ``end`` the last —
    moment it names: ``10`` is 10:00:00 to 10:59:59.999999 (PS3.4 C.2.2.2.5)."""
    value = value.strip()
    if not value:
        return None
    whole, _, fraction = value.partition(".")
    if not (whole.isdigit() and len(whole) in (2, 4, 6)) or (fraction and not fraction.isdigit()):
        raise QueryError(f"StudyTime is HHMMSS[.FFFFFF] (a range is HHMMSS-HHMMSS), not {value!r}")
    filler = "235959" if end else "000000"
    digits = whole + filler[len(whole) :]
    micro = int(fraction.ljust(6, "0")[:6]) if fraction else (999999 if end else 0)
    try:
        return time(int(digits[:2]), int(digits[2:4]), int(digits[4:6]), micro)
    except ValueError:
        raise QueryError(f"StudyTime {value!r} is not a time of day") from None


def _time_range(value: str) -> tuple[time | None, time | None]:
    start, dash, end = value.partition("-")
    return _dicom_time(start, end=False), _dicom_time(end if dash else start, end=True)


def _dicom_date(value: str, keyword: str) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise QueryError(
            f"{keyword} dates are YYYYMMDD (a range is YYYYMMDD-YYYYMMDD), not {value!r}"
        ) from None


def study_date_q(prefix: str, value: str) -> Q:
    """Range matching on the study's local date. Study times are stored in UTC; the date the
    modality wrote is the facility's local date, so each facility's time zone bounds its range."""
    start_text, dash, end_text = value.partition("-")
    start = _dicom_date(start_text, "StudyDate")
    end = _dicom_date(end_text if dash else start_text, "StudyDate")
    clauses = Q(pk__in=[])
    for zone_name in Facility.objects.values_list("timezone", flat=True).distinct():
        zone = ZoneInfo(zone_name)
        clause = Q(**{f"{prefix}facility__timezone": zone_name})
        if start is not None:
            clause &= Q(**{f"{prefix}study_datetime__gte": start.replace(tzinfo=zone)})
        if end is not None:
            clause &= Q(**{f"{prefix}study_datetime__lt": (end + timedelta(days=1)).replace(tzinfo=zone)})
        clauses |= clause
    return clauses


def study_time_q(queryset: QuerySet, prefix: str, value: str) -> QuerySet:
    """Range matching on the study's local time of day, in each facility's zone (as StudyDate)."""
    start, end = _time_range(value)
    clauses = Q(pk__in=[])
    for index, zone_name in enumerate(Facility.objects.values_list("timezone", flat=True).distinct()):
        local = f"_tm{index}"
        queryset = queryset.annotate(
            **{local: TruncTime(f"{prefix}study_datetime", tzinfo=ZoneInfo(zone_name))}
        )
        clause = Q(**{f"{prefix}facility__timezone": zone_name, f"{prefix}study_datetime__isnull": False})
        if start is not None:
            clause &= Q(**{f"{local}__gte": start})
        if end is not None:
            clause &= Q(**{f"{local}__lte": end})
        clauses |= clause
    return queryset.filter(clauses)


def qido_filter(queryset: QuerySet, query: QidoRequest) -> QuerySet:
    """Apply the query's matching keys to a Study, Series or Instance queryset (``query.level``)."""
    study = STUDY_PATH[query.level]
    series = SERIES_PATH.get(query.level)
    for keyword, value in query.matches:
        if keyword in PERSON_NAME_KEYS:
            name = f"_pn_{keyword}"
            queryset = queryset.annotate(**{name: _person_name_expression(keyword, study)})
            regex = fuzzy_name_regex(value) if query.fuzzy else person_name_regex(value)
            queryset = queryset.filter(**{f"{name}__iregex": regex})
        elif keyword == "StudyTime":
            queryset = study_time_q(queryset, study, value)
        else:
            queryset = queryset.filter(_match_q(keyword, value, study, series, query.level))
    return queryset


def _person_name_expression(keyword: str, study: str):
    if keyword == "ReferringPhysicianName":
        return F(f"{study}referring_physician_name")  # stored FAMILY^GIVEN^MIDDLE, trailing ^ trimmed
    return Concat(
        F(f"{study}patient__family_name"),
        Value("^"),
        F(f"{study}patient__given_name"),
        Value("^"),
        F(f"{study}patient__middle_name"),
        output_field=CharField(),
    )


def _match_q(keyword: str, value: str, study: str, series: str | None, level: str) -> Q:
    match keyword:
        case "StudyInstanceUID":
            return uid_list_q(f"{study}study_instance_uid", value)
        case "PatientID":
            return text_q(f"{study}patient__mrn", value)
        case "AccessionNumber":
            return text_q(f"{study}accession_number", value)
        case "StudyDescription":
            return text_q(f"{study}description", value)
        case "StudyID":
            return text_q(f"{study}dicom_study_id", value)
        case "StudyDate":
            return study_date_q(study, value)
        case "ModalitiesInStudy":
            modalities = [m.strip() for m in value.replace(",", "\\").split("\\") if m.strip()]
            study_id = {STUDY: "pk", SERIES: "study_id", INSTANCE: "series__study_id"}[level]
            return Q(Exists(Series.objects.filter(study_id=OuterRef(study_id), modality__in=modalities)))
        case "SeriesInstanceUID":
            return uid_list_q(f"{series}series_instance_uid", value)
        case "Modality":
            return uid_list_q(f"{series}modality", value)  # a list of modalities, like a UID list
        case "SeriesNumber":
            return int_q(f"{series}series_number", keyword, value)
        case "SeriesDescription":
            return text_q(f"{series}description", value)
        case "SOPInstanceUID":
            return uid_list_q("sop_instance_uid", value)
        case "SOPClassUID":
            return uid_list_q("sop_class_uid", value)
        case "InstanceNumber":
            return int_q("instance_number", keyword, value)
    raise AssertionError(f"no matcher for {keyword}")
