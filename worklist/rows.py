"""A worklist row as the pages show it — one definition for a page's first render, its resync, and
the rows pushed over ``/ws/worklist/`` (docs/worklist-fanout.md).

A row's HTML is the same for every reader who may see it except for one thing: whether it is *theirs*
(the "Yours" label, the Release button instead of Claim). A study held by someone is on no other
reader's list, so one study has at most two reader renderings — the holder's and everyone else's —
plus the operations desk's. ``row_sort`` and ``row_facts`` travel with each row (as ``data-``
attributes and in pushed events) so a page can place a pushed row in reading order and test it
against its own filters without asking the server."""

from __future__ import annotations

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
from facilities.times import due_text
from imaging.models import Study, age_on, clinical_history_text
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


def rows_for_reader(ids: list[int], *, viewer_id: int, at: datetime) -> list[ReaderRow]:
    """These studies' rows for ``viewer_id``'s page, in this order (one query, plain values)."""
    rows = {row["id"]: row for row in Study.objects.filter(pk__in=ids).values(*READER_ROW_COLUMNS).order_by()}
    return [reader_row(rows[pk], viewer_id=viewer_id, at=at) for pk in ids if pk in rows]


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


def reader_row(row: dict, *, viewer_id: int | None, at: datetime) -> ReaderRow:
    """The row for ``viewer_id``'s page (None: any reader but its holder)."""
    mine = viewer_id is not None and row["worklist_claimed_by_id"] == viewer_id
    priority = row["priority"]
    return ReaderRow(
        pk=row["id"],
        html=reader_row_html(row, mine=mine, at=at),
        sort=_sort_key(mine, priority, row["triage_rank"], row["worklist_sla_deadline"], row["id"]),
        facts=_reader_facts(row),
        stroke=row["is_stroke"] or priority == PriorityClass.STROKE,
        claimed=row["worklist_claimed_by_id"] is not None,
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


def reader_row_html(row: dict, *, mine: bool, at: datetime) -> str:
    """A reader's row from its ``READER_ROW_COLUMNS`` values: the markup the page's first render, its
    resync and the pushed rows share. Built in Python rather than by a template: a reader's page is
    100 rows of ~50 values each, and the template engine's per-variable lookups were most of the
    page's CPU (bench/worklist; docs/worklist-fanout.md). Every value is escaped as autoescape would,
    except what this module builds from digits: the sort key, the ISO times and the URLs (ids in
    reversed paths)."""
    e = _escape
    pk, priority = row["id"], row["priority"]
    zone = ZoneInfo(row["facility__timezone"])
    deadline = row["worklist_sla_deadline"]
    deadline_iso = _local_iso(deadline)
    start = row["assignment__clock_started_at"]
    sla = sla_state(start, deadline, at)
    age = age_on(row["patient__birth_date"], at.astimezone(zone).date()) if row["patient_id"] else None
    sex = (row["patient__sex"] or "") if row["patient_id"] else ""
    age_sex = " ".join(filter(None, [f"{age} y" if age is not None else "", sex]))
    procedure = (row["order__procedure_text"] if row["order_id"] else "") or row["description"]
    history = _history(row) if row["order_id"] else ""
    stroke = row["is_stroke"] or priority == PriorityClass.STROKE
    facts = _reader_facts(row)
    urls = _row_urls()
    viewer_url, claim_url, release_url = (urls[name].format(pk) for name in _ROW_URLS)
    sort = _sort_key(mine, priority, row["triage_rank"], deadline, pk)
    facility_name = e(row["facility__name"])
    accession = e(row["accession_number"])
    classes = "wl-row" + (" mine" if mine else "") + (" breached" if sla.state == "breached" else "")
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
    # the deadline's local text once: the due cell and data-due-local show the same (at ``at``)
    due_local = due_text(deadline, zone, at=at) if deadline else ""
    if deadline:
        clock = f' data-clock-start="{_local_iso(start)}"' if start else ""
        due = time_html(deadline, due_local)
        sla_cell = (
            f'<span class="countdown sla-{e(sla.state)}" data-testid="countdown"'
            f' data-deadline="{deadline_iso}"{clock}>{e(sla.text)}</span>\n'
            f'<div class="muted">due {due}</div>'
        )
    else:
        sla_cell = '<span class="muted">clock not started</span>'
    exam_time = row["study_datetime"] or row["first_received_at"]
    return mark_safe(  # noqa: S308 — every interpolated value above and below is escaped
        f'<tr class="{classes}" data-testid="study-row" data-study-id="{pk}"'
        f' data-accession="{accession}" data-sort="{sort}"\n'
        f'      data-facility="{e(facts["facility"])}" data-modalities="{e(facts["modalities"])}"'
        f' data-subspecialty="{e(facts["subspecialty"])}" data-priority="{e(priority)}"\n'
        f'      data-viewer-url="{viewer_url}" data-claim-url="{claim_url}"'
        f' data-release-url="{release_url}"\n'
        f'      data-stroke="{1 if stroke else 0}"'
        f' data-claimed="{1 if row["worklist_claimed_by_id"] else 0}"'
        f' data-mine="{1 if mine else 0}"\n'
        f'      data-facility-name="{facility_name}" data-procedure="{e(procedure)}"'
        f' data-deadline="{deadline_iso}" data-due-local="{e(due_local)}" aria-current="false">\n'
        f'    <td><span class="prio prio-{e(priority.lower())}">'
        f"{e(_PRIORITY_LABELS.get(priority, priority))}</span>"
        f"{badge}</td>\n"
        f'    <td>{facility_name}<div class="muted">'
        f"{zone_time(exam_time, zone)}</div></td>\n"
        f"    <td>{e(age_sex or '—')}</td>\n"
        f'    <td>{e(procedure or "—")}<div class="muted">{accession} ·'
        f" {e(row['modalities'])}</div>{history}</td>\n"
        f"    <td>{e(subspecialty or 'unclassified')}</td>\n"
        f'    <td>{row["number_of_instances"]}<div class="muted">'
        f"{'complete' if row['status'] == 'complete' else 'receiving…'}</div></td>\n"
        f"    <td>{sla_cell}</td>\n"
        f'    <td data-testid="holder">{holder}</td>\n'
        f'    <td class="wl-actions">\n      {action}\n'
        f'      <a class="button secondary" href="{viewer_url}">Open</a>\n'
        '      <div class="row-message error" role="alert" data-testid="row-message"></div>\n'
        "    </td>\n  </tr>"
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
