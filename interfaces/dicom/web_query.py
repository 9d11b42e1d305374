"""QIDO-RS (PS3.18 §10.6): query parameters → a filter over the database index.

Matching follows PS3.4 C.2.2.2: single value matching (exact), wildcard matching (``*`` any run,
``?`` one character) for text attributes, UID list matching (``\\`` or ``,`` separated), range
matching on Study Date (``YYYYMMDD-YYYYMMDD``, open either end), and universal matching for an
empty value or a lone ``*``. Patient Name matches case-insensitively (as most archives do: the
same patient is typed in different cases by different systems); other keys are case-sensitive.

Unsupported keys are ignored and named in a ``Warning`` header (PS3.18 §8.3.4.1) rather than
refused, so a viewer asking for more than we index still gets its answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.db.models import CharField, Exists, F, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Concat

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


def qido_parse(params: list[tuple[str, str]], *, level: str) -> QidoRequest:
    """Parse ``(name, value)`` query pairs (names may be keywords or tags, e.g. ``00100020``)."""
    matches, ignored, includes = [], [], set()
    include_all, limit, offset = False, None, 0
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
        elif name == "fuzzymatching":
            if value.strip().lower() == "true":
                ignored.append("fuzzymatching")
        elif name in CONTROL or name.startswith("_"):
            continue
        else:
            tag = attribute_tag(name) if "." not in name else None
            keyword = attribute_name(tag) if tag is not None else name
            if keyword in KEYS_AT[level]:
                if value.strip() not in ("", "*"):  # universal matching
                    matches.append((keyword, value.strip()))
            else:
                ignored.append(name)
    return QidoRequest(
        level, tuple(matches), include_all, frozenset(includes), limit, offset, tuple(dict.fromkeys(ignored))
    )


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
    uids = [u.strip() for u in value.replace(",", "\\").split("\\") if u.strip()]
    return Q(**{f"{field_name}__in": uids})


def int_q(field_name: str, keyword: str, value: str) -> Q:
    try:
        return Q(**{field_name: int(value)})
    except ValueError:
        raise QueryError(f"{keyword} must be an integer, not {value!r}") from None


def person_name_regex(value: str) -> str:
    """PN matching against ``FAMILY^GIVEN^MIDDLE`` (empty trailing components match)."""
    return f"^{_wildcard_regex(value.rstrip('^'))}\\^*$"


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


def qido_filter(queryset: QuerySet, query: QidoRequest) -> QuerySet:
    """Apply the query's matching keys to a Study, Series or Instance queryset (``query.level``)."""
    study = STUDY_PATH[query.level]
    series = SERIES_PATH.get(query.level)
    for keyword, value in query.matches:
        if keyword == "PatientName":
            queryset = queryset.annotate(
                _pn=Concat(
                    F(f"{study}patient__family_name"),
                    Value("^"),
                    F(f"{study}patient__given_name"),
                    Value("^"),
                    F(f"{study}patient__middle_name"),
                    output_field=CharField(),
                )
            ).filter(_pn__iregex=person_name_regex(value))
            continue
        queryset = queryset.filter(_match_q(keyword, value, study, series, query.level))
    return queryset


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
