"""A worklist row as the pages show it — one definition for a page's first render, its resync, and
the rows pushed over ``/ws/worklist/`` (docs/worklist-fanout.md).

A row's HTML is the same for every reader who may see it except for one thing: whether it is *theirs*
(the "Yours" label, the Release button instead of Claim). A study held by someone is on no other
reader's list, so one study has at most two reader renderings — the holder's and everyone else's —
plus the operations desk's. ``row_sort`` and ``row_facts`` travel with each row (as ``data-``
attributes and in pushed events) so a page can place a pushed row in reading order and test it
against its own filters without asking the server."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from html import escape as html_escape
from zoneinfo import ZoneInfo

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from facilities.models import PriorityClass
from facilities.templatetags.facility_time import time_html, zone_time
from facilities.times import CLOCK_FORMAT, DATED_CLOCK_FORMAT, due_text
from imaging.models import Study, age_on, clinical_history_text
from radiology.statements import SLOT_IDS, Statement
from worklist.clock import SLA_CRITICAL_SHARE, SLA_WARNING_SHARE

# reading order of the priority classes, as imaging.models.PRIORITY_RANK ranks them
_RANK = {p.value: rank for rank, p in enumerate(PriorityClass)}
OPERATIONS_ROW = "worklist/_operations_row.html"


@dataclass(frozen=True)
class SlaState:
    state: str  # ok · warning (≥ 50 % of the target used) · critical (≥ 80 %) · breached · none
    text: str


def sla_state(start: datetime | None, deadline: datetime | None, at: datetime) -> SlaState:
    """The countdown as the page first shows it; static/readroom/worklist.js ticks it on with the
    same thresholds (DESIGN.md §4: warn at 50 % and 80 %, breach at 100 %)."""
    if deadline is None:
        return SlaState("none", "")
    left = (deadline - at).total_seconds()
    if left <= 0:
        return SlaState("breached", "BREACHED")
    used = 1 - left / (deadline - start).total_seconds() if start and deadline > start else 0
    state = "critical" if used >= SLA_CRITICAL_SHARE else "warning" if used >= SLA_WARNING_SHARE else "ok"
    hours, rest = divmod(int(left), 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"
    return SlaState(state, text)


def row_decorate(study: Study, *, viewer_id: int | None, at: datetime) -> Study:
    """What a row shows beside the model fields, worked out once here rather than in the template.
    ``viewer_id``: whose page the row is for (its holder sees "Yours"); None for operations."""
    zone = study.facility.zone
    age = study.patient.age_on(at.astimezone(zone).date()) if study.patient_id else None
    sex = study.patient.sex if study.patient_id else ""
    study.age_sex = " ".join(filter(None, [f"{age} y" if age is not None else "", sex]))
    study.procedure = (study.order.procedure_text if study.order_id else "") or study.description
    # the hospital's whole "why": every OBR-31, OBR-13 and the order's notes (the row's detail)
    study.history = study.order.clinical_history if study.order_id else ""
    study.exam_time = study.study_datetime or study.first_received_at
    study.stroke = study.is_stroke or study.priority == PriorityClass.STROKE
    holder_id = study.worklist_claimed_by_id
    study.mine = viewer_id is not None and holder_id == viewer_id
    deadline = study.worklist_sla_deadline
    study.due_local = due_text(deadline, zone, at=at) if deadline else ""
    start = study.assignment.clock_started_at if _has_assignment(study) else None
    study.sla = sla_state(start, deadline, at)
    study.clock_start = start
    study.sort_key = row_sort(study, mine=study.mine)
    study.facts = row_facts(study)
    urls = _row_urls()
    study.viewer_url, study.claim_url, study.release_url = (urls[name].format(study.pk) for name in _ROW_URLS)
    return study


_ROW_URLS = ("imaging:open", "worklist-claim", "worklist-release")


@cache
def _row_urls() -> dict[str, str]:
    # reversed once per process, not three times per row (a page has 100 rows)
    return {name: reverse(name, args=[0]).replace("/0/", "/{}/") for name in _ROW_URLS}


def rows_decorate(studies: list[Study], *, viewer_id: int | None, at: datetime) -> list[Study]:
    return [row_decorate(study, viewer_id=viewer_id, at=at) for study in studies]


def row_sort(study: Study, *, mine: bool) -> str:
    """The reading order as one string that sorts as the worklist does (held first, priority class,
    AI triage rank, SLA deadline with none last, id): fixed-width fields, so the page compares strings."""
    return _sort_key(
        mine, study.priority, getattr(study, "triage_rank", 1), study.worklist_sla_deadline, study.pk
    )


def _sort_key(mine: bool, priority: str, triage: int, deadline: datetime | None, pk: int) -> str:
    due = f"{int(deadline.timestamp() * 1000):015d}" if deadline else "9" * 15
    return f"{0 if mine else 1}{_RANK.get(priority, len(_RANK))}{triage}{due}{pk:012d}"


def row_facts(study: Study) -> dict[str, str]:
    """What a page's filters test (worklist.selectors._filtered, on the page's side)."""
    return {
        "facility": study.facility.code,
        "modalities": study.modalities or "",
        "subspecialty": study.subspecialty.code if study.subspecialty_id else "",
        "priority": study.priority,
    }


def _has_assignment(study: Study) -> bool:
    from worklist.models import StudyAssignment

    try:
        study.assignment  # noqa: B018 — a reverse one-to-one raises when absent
    except StudyAssignment.DoesNotExist:
        return False
    return True


# The columns a reader's row shows, as plain values (``rows_for_reader``; a pushed row gives the same from
# its loaded study, ``reader_row_values``): a page is 100 studies, and model instances with five
# relations each were a third of its CPU (bench/worklist, docs/worklist-fanout.md).
READER_ROW_COLUMNS = (
    *("id", "patient_id", "order_id", "subspecialty_id", "worklist_claimed_by_id"),
    *("accession_number", "modalities", "description", "number_of_instances", "status", "priority"),
    *("is_stroke", "triage_rank", "ai_badge", "study_datetime", "first_received_at"),
    "worklist_sla_deadline",
    *("facility__name", "facility__code", "facility__timezone"),
    *("patient__birth_date", "patient__sex", "subspecialty__code", "subspecialty__name"),
    *("order__procedure_text", "order__reasons_for_study", "order__reason", "order__clinical_information"),
    *("order__notes", "assignment__clock_started_at"),
)


@dataclass(frozen=True, slots=True)
class ReaderRow:
    """A reader's row: its markup, reading-order key and filter facts, and what the page asks of it."""

    pk: int
    html: str
    sort: str
    facts: dict[str, str]
    stroke: bool
    claimed: bool


# One statement for every page's rows, whatever their ids (radiology.statements: one array parameter)
_READER_ROWS = Statement(
    "worklist.reader_rows",
    lambda ids: Study.objects.filter(pk__any_of=ids).values(*READER_ROW_COLUMNS).order_by(),
    ids=SLOT_IDS,
    joins_as_written=True,  # the studies by id, then one-to-one lookups (radiology.statements)
)


def rows_for_reader(ids: list[int], *, viewer_id: int, at: datetime) -> list[ReaderRow]:
    """These studies' rows for ``viewer_id``'s page, in this order (one query, plain values)."""
    rows = {row["id"]: row for row in _READER_ROWS.values(ids=ids)}
    zone = timezone.get_current_timezone()
    return [reader_row(rows[pk], viewer_id=viewer_id, at=at, zone=zone) for pk in ids if pk in rows]


def reader_row_values(study: Study) -> dict:
    """``READER_ROW_COLUMNS`` of a loaded study (its relations selected): the pushed row's source, so
    it is built by the very code that builds the page's."""
    order, patient, sub = study.order, study.patient, study.subspecialty
    values = {name: getattr(study, name) for name in READER_ROW_COLUMNS if "__" not in name}
    values.update(
        {
            "facility__name": study.facility.name,
            "facility__code": study.facility.code,
            "facility__timezone": study.facility.timezone,
            "patient__birth_date": patient.birth_date if patient else None,
            "patient__sex": patient.sex if patient else None,
            "subspecialty__code": sub.code if sub else None,
            "subspecialty__name": sub.name if sub else None,
            **{
                f"order__{name}": getattr(order, name) if order else None
                for name in ("procedure_text", "reasons_for_study", "reason", "clinical_information", "notes")
            },
            "assignment__clock_started_at": study.assignment.clock_started_at
            if _has_assignment(study)
            else None,
        }
    )
    return values


def reader_row(row: dict, *, viewer_id: int | None, at: datetime, zone=None) -> ReaderRow:
    """The row for ``viewer_id``'s page (None: any reader but its holder). ``zone``: the current time
    zone (``_local_iso``'s), when the caller already has it."""
    mine = viewer_id is not None and row["worklist_claimed_by_id"] == viewer_id
    compiled = _compiled(row, mine, zone or timezone.get_current_timezone())
    return ReaderRow(
        pk=compiled.pk,
        html=reader_row_html(row, mine=mine, at=at, compiled=compiled),
        sort=compiled.sort,
        facts=dict(compiled.facts),
        stroke=compiled.stroke,
        claimed=compiled.claimed,
    )


def _reader_facts(row: dict) -> dict[str, str]:
    # row_facts, over the row's values
    return {
        "facility": row["facility__code"],
        "modalities": row["modalities"] or "",
        "subspecialty": row["subspecialty__code"] if row["subspecialty_id"] else "",
        "priority": row["priority"],
    }


_PRIORITY_LABELS = {value: str(label) for value, label in PriorityClass.choices}


# --- a row compiled once per content --------------------------------------------------------------
#
# Most of a reader's row does not depend on the instant it is rendered at: only the SLA countdown
# (its state, text and the "breached" class), the due time's text (its date shows when it is not
# today at the facility) and the patient's age do. ``_Compiled`` holds the rest already written —
# escaped, the times formatted, the history joined — and ``reader_row_html`` fills in the three
# moving parts at ``at``. It is cached by the row's *content*: the key is every value the row is
# built from (``READER_ROW_COLUMNS``), whether it is the viewer's, and the current time zone. No
# write can make a cached row stale, because a changed study, order, patient or facility is a
# different key — so there is nothing to invalidate (a signal-based invalidation would miss
# ``QuerySet.update()`` and the bench's set-based SQL). Nor can it show a study to a reader who may
# not see it: a row is found only by the values of a study the caller has already loaded through
# the permission-checked list (or the broadcast's audience), and the key holds nothing of the
# reader but "is it theirs". The push path (``worklist.broadcast.study_fanout``) builds its rows
# through here too, so a study just pushed is already compiled for the next resync in that process.
# Per process, not in Redis: a page's 100 look-ups in Redis (a round trip and 100 unpickles) would
# cost about what rendering them does.

ROW_CACHE_SIZE = 20_000  # compiled rows kept per process (~2 KB each): a busy archive's open list
_ROW_CACHE: dict[tuple, _Compiled] = {}
_DATETIME_COLUMNS = (
    "study_datetime",
    "first_received_at",
    "worklist_sla_deadline",
    "assignment__clock_started_at",
)
_JSON_COLUMNS = ("order__reasons_for_study", "order__notes")
_KEY_COLUMNS = tuple(c for c in READER_ROW_COLUMNS if c not in _DATETIME_COLUMNS + _JSON_COLUMNS)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A reader's row without its instant: the markup around the moving parts, and what they need."""

    pk: int
    sort: str
    facts: dict[str, str]
    stroke: bool
    claimed: bool
    head: str  # up to the class list's end (before " breached")
    before_due: str  # from the class list's end to data-due-local's value
    before_age: str  # from data-due-local's end to the age/sex cell's text
    before_sla: str  # from the age/sex cell's end to the SLA cell's content
    tail: str  # from the SLA cell's end
    zone: ZoneInfo
    birth_date: object  # None without a patient or a birth date
    has_patient: bool
    sex: str
    start: datetime | None
    deadline: datetime | None
    deadline_day: object  # the deadline's date at the facility
    due_clock: str  # "14:46 CST" (the deadline today there)
    due_dated: str  # "Thu 3 Dec 14:46 CST"
    countdown: str  # the countdown's attributes after its class (data-testid, data-deadline, …)
    due_time: str  # ``<time datetime=… title=…>`` of the deadline, up to its text


def _datetime_key(value: datetime | None):
    # equal aware datetimes may differ by offset, and the row writes a value's own ``isoformat``
    return None if value is None else (value, value.utcoffset())


def _row_key(row: dict, mine: bool, zone) -> tuple:
    return (
        mine,
        zone,
        *map(row.__getitem__, _KEY_COLUMNS),
        *(_datetime_key(row[c]) for c in _DATETIME_COLUMNS),
        # the order's JSON lists (HL7's reasons and notes) as text: a list is not hashable
        *(repr(row[c]) for c in _JSON_COLUMNS),
    )


def _compiled(row: dict, mine: bool, zone) -> _Compiled:
    key = _row_key(row, mine, zone)
    compiled = _ROW_CACHE.get(key)
    if compiled is None:
        compiled = _compile(row, mine)
        if len(_ROW_CACHE) >= ROW_CACHE_SIZE:
            # the oldest first (dicts keep insertion order). Threads share the dict (sync views run
            # in a thread pool under ASGI): another thread's insert between iter() and next() makes
            # the iterator raise, and then this one simply evicts nothing this time.
            with contextlib.suppress(RuntimeError, StopIteration):
                _ROW_CACHE.pop(next(iter(_ROW_CACHE)), None)
        _ROW_CACHE[key] = compiled
    return compiled


def reader_row_html(row: dict, *, mine: bool, at: datetime, compiled: _Compiled | None = None) -> str:
    """A reader's row from its ``READER_ROW_COLUMNS`` values: the markup the page's first render, its
    resync and the pushed rows share. Built in Python rather than by a template: a reader's page is
    100 rows of ~50 values each, and the template engine's per-variable lookups were most of the
    page's CPU (bench/worklist; docs/worklist-fanout.md). Every value is escaped as autoescape would,
    except what this module builds from digits: the sort key, the ISO times and the URLs (ids in
    reversed paths). What does not move with ``at`` comes compiled (``_compiled``)."""
    c = compiled or _compiled(row, mine, timezone.get_current_timezone())
    sla = sla_state(c.start, c.deadline, at)
    today = at.astimezone(c.zone).date()
    age = age_on(c.birth_date, today) if c.has_patient else None
    age_sex = " ".join(filter(None, [f"{age} y" if age is not None else "", c.sex]))
    if c.deadline:
        due_local = c.due_clock if c.deadline_day == today else c.due_dated
        sla_cell = (
            f'<span class="countdown sla-{_escape(sla.state)}"{c.countdown}>{_escape(sla.text)}</span>\n'
            f'<div class="muted">due {c.due_time}{due_local}</time></div>'
        )
    else:
        due_local, sla_cell = "", '<span class="muted">clock not started</span>'
    return mark_safe(  # noqa: S308 — every part is escaped (compiled ones in _compile)
        f"{c.head}{' breached' if sla.state == 'breached' else ''}{c.before_due}{due_local}"
        f"{c.before_age}{_escape(age_sex or '—')}{c.before_sla}{sla_cell}{c.tail}"
    )


def _compile(row: dict, mine: bool) -> _Compiled:
    """The row's markup around its moving parts (``reader_row_html``), every value escaped."""
    e = _escape
    pk, priority = row["id"], row["priority"]
    zone = ZoneInfo(row["facility__timezone"])
    deadline = row["worklist_sla_deadline"]
    deadline_iso = _local_iso(deadline)
    start = row["assignment__clock_started_at"]
    sex = (row["patient__sex"] or "") if row["patient_id"] else ""
    procedure = (row["order__procedure_text"] if row["order_id"] else "") or row["description"]
    history = _history(row) if row["order_id"] else ""
    stroke = row["is_stroke"] or priority == PriorityClass.STROKE
    facts = _reader_facts(row)
    urls = _row_urls()
    viewer_url, claim_url, release_url = (urls[name].format(pk) for name in _ROW_URLS)
    sort = _sort_key(mine, priority, row["triage_rank"], deadline, pk)
    facility_name = e(row["facility__name"])
    accession = e(row["accession_number"])
    badge = (
        f'<div class="ai-badge" data-testid="ai-badge" title="AI finding">AI: {e(row["ai_badge"])}</div>'
        if row["ai_badge"]
        else ""
    )
    history = (
        '<details class="wl-history" data-testid="clinical-history"><summary>History</summary>'
        f"{_lines_html(history)}</details>"
        if history
        else ""
    )
    subspecialty = row["subspecialty__name"] if row["subspecialty_id"] else ""
    holder = "<strong>Yours</strong>" if mine else "Unclaimed"
    action = (
        '<button type="button" class="secondary" data-action="release">Release</button>'
        if mine
        else '<button type="button" data-action="claim">Claim</button>'
    )
    if deadline:
        local = deadline.astimezone(zone)
        deadline_day = local.date()
        due_clock, due_dated = e(local.strftime(CLOCK_FORMAT)), e(local.strftime(DATED_CLOCK_FORMAT))
        clock = f' data-clock-start="{_local_iso(start)}"' if start else ""
        countdown = f' data-testid="countdown" data-deadline="{deadline_iso}"{clock}'
        # time_html's <time> without its text (the text is the due time at ``at``)
        due_time = str(time_html(deadline, "\0")).partition("\0")[0]
    else:
        deadline_day = due_clock = due_dated = countdown = due_time = ""
    exam_time = row["study_datetime"] or row["first_received_at"]
    return _Compiled(
        pk=pk,
        sort=sort,
        facts=facts,
        stroke=stroke,
        claimed=row["worklist_claimed_by_id"] is not None,
        head=f'<tr class="wl-row{" mine" if mine else ""}',
        before_due=(
            f'" data-testid="study-row" data-study-id="{pk}"'
            f' data-accession="{accession}" data-sort="{sort}"\n'
            f'      data-facility="{e(facts["facility"])}" data-modalities="{e(facts["modalities"])}"'
            f' data-subspecialty="{e(facts["subspecialty"])}" data-priority="{e(priority)}"\n'
            f'      data-viewer-url="{viewer_url}" data-claim-url="{claim_url}"'
            f' data-release-url="{release_url}"\n'
            f'      data-stroke="{1 if stroke else 0}"'
            f' data-claimed="{1 if row["worklist_claimed_by_id"] else 0}"'
            f' data-mine="{1 if mine else 0}"\n'
            f'      data-facility-name="{facility_name}" data-procedure="{e(procedure)}"'
            f' data-deadline="{deadline_iso}" data-due-local="'
        ),
        before_age=(
            '" aria-current="false">\n'
            f'    <td><span class="prio prio-{e(priority.lower())}">'
            f"{e(_PRIORITY_LABELS.get(priority, priority))}</span>"
            f"{badge}</td>\n"
            f'    <td>{facility_name}<div class="muted">'
            f"{zone_time(exam_time, zone)}</div></td>\n"
            "    <td>"
        ),
        before_sla=(
            "</td>\n"
            f'    <td>{e(procedure or "—")}<div class="muted">{accession} ·'
            f" {e(row['modalities'])}</div>{history}</td>\n"
            f"    <td>{e(subspecialty or 'unclassified')}</td>\n"
            f'    <td>{row["number_of_instances"]}<div class="muted">'
            f"{'complete' if row['status'] == 'complete' else 'receiving…'}</div></td>\n"
            "    <td>"
        ),
        tail=(
            "</td>\n"
            f'    <td data-testid="holder">{holder}</td>\n'
            f'    <td class="wl-actions">\n      {action}\n'
            f'      <a class="button secondary" href="{viewer_url}">Open</a>\n'
            '      <div class="row-message error" role="alert" data-testid="row-message"></div>\n'
            "    </td>\n  </tr>"
        ),
        zone=zone,
        birth_date=row["patient__birth_date"],
        has_patient=bool(row["patient_id"]),
        sex=sex,
        start=start,
        deadline=deadline,
        deadline_day=deadline_day,
        due_clock=due_clock,
        due_dated=due_dated,
        countdown=countdown,
        due_time=due_time,
    )


def _history(row: dict) -> str:
    return clinical_history_text(
        row["order__reasons_for_study"],
        row["order__reason"],
        row["order__clinical_information"],
        row["order__notes"],
    )


def _escape(value) -> str:
    """``conditional_escape`` without its lazy-string wrapper (it was a tenth of a page's CPU); a
    plain ``str`` (every column value) straight to ``html.escape``."""
    if type(value) is str:
        # most values (codes, names, accessions) have nothing to escape: a set test is a third of
        # html.escape's five replaces
        return value if _MARKUP.isdisjoint(value) else html_escape(value)
    return value.__html__() if hasattr(value, "__html__") else html_escape(str(value))


_MARKUP = frozenset("&<>\"'")


_NEWLINES = re.compile(r"\r\n|\r")


def _lines_html(text: str) -> str:
    # the ``linebreaksbr`` filter with autoescape, without its lazy-string wrappers
    return html_escape(_NEWLINES.sub("\n", text)).replace("\n", "<br>")


def _local_iso(value: datetime | None) -> str:
    # what the template filter ``date:'c'`` writes: ISO 8601 in the current time zone
    return timezone.localtime(value).isoformat() if value else ""


def operations_row_html(study: Study, coverage) -> str:
    return render_to_string(OPERATIONS_ROW, {"s": study, "coverage": coverage})
