"""A worklist row as the pages show it — one definition for a page's first render, its resync, and
the rows pushed over ``/ws/worklist/`` (docs/worklist-fanout.md).

A row's HTML is the same for every reader who may see it except for one thing: whether it is *theirs*
(the "Yours" label, the Release button instead of Claim). A study held by someone is on no other
reader's list, so one study has at most two reader renderings — the holder's and everyone else's —
plus the operations desk's. ``row_sort`` and ``row_facts`` travel with each row (as ``data-``
attributes and in pushed events) so a page can place a pushed row in reading order and test it
against its own filters without asking the server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from html import escape as html_escape

from django.template.defaultfilters import linebreaksbr
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from facilities.models import PriorityClass
from facilities.templatetags.facility_time import facility_due, zone_time
from facilities.times import due_text
from imaging.models import Study
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
    deadline = study.worklist_sla_deadline
    due = f"{int(deadline.timestamp() * 1000):015d}" if deadline else "9" * 15
    triage = getattr(study, "triage_rank", 1)
    return f"{0 if mine else 1}{_RANK.get(study.priority, len(_RANK))}{triage}{due}{study.pk:012d}"


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


def reader_row_html(study: Study) -> str:
    """A reader's row (``row_decorate``d study): the markup the page's first render, its resync and
    the pushed rows share. Built in Python rather than by a template: a reader's page is 100 rows of
    ~50 values each, and the template engine's per-variable lookups were most of the page's CPU
    (bench/worklist; docs/worklist-fanout.md). Every value is escaped as autoescape would, except
    what this module builds from digits: the sort key, the ISO times and the URLs (ids in reversed
    paths)."""
    e = _escape
    facility = study.facility
    deadline = study.worklist_sla_deadline
    deadline_iso = _local_iso(deadline)
    mine = study.mine
    classes = "wl-row" + (" mine" if mine else "") + (" breached" if study.sla.state == "breached" else "")
    badge = (
        f'<div class="ai-badge" data-testid="ai-badge" title="AI finding">AI: {e(study.ai_badge)}</div>'
        if study.ai_badge
        else ""
    )
    history = (
        '<details class="wl-history" data-testid="clinical-history"><summary>History</summary>'
        f"{linebreaksbr(study.history, autoescape=True)}</details>"
        if study.history
        else ""
    )
    subspecialty = study.subspecialty.name if study.subspecialty_id else ""
    holder = "<strong>Yours</strong>" if mine else "Unclaimed"
    action = (
        '<button type="button" class="secondary" data-action="release">Release</button>'
        if mine
        else '<button type="button" data-action="claim">Claim</button>'
    )
    facts = study.facts
    return mark_safe(  # noqa: S308 — every interpolated value above and below is escaped
        f'<tr class="{classes}" data-testid="study-row" data-study-id="{study.pk}"'
        f' data-accession="{e(study.accession_number)}" data-sort="{study.sort_key}"\n'
        f'      data-facility="{e(facts["facility"])}" data-modalities="{e(facts["modalities"])}"'
        f' data-subspecialty="{e(facts["subspecialty"])}" data-priority="{e(study.priority)}"\n'
        f'      data-viewer-url="{study.viewer_url}" data-claim-url="{study.claim_url}"'
        f' data-release-url="{study.release_url}"\n'
        f'      data-stroke="{1 if study.stroke else 0}"'
        f' data-claimed="{1 if study.worklist_claimed_by_id else 0}"'
        f' data-mine="{1 if mine else 0}"\n'
        f'      data-facility-name="{e(facility.name)}" data-procedure="{e(study.procedure)}"'
        f' data-deadline="{deadline_iso}" data-due-local="{e(study.due_local)}" aria-current="false">\n'
        f'    <td><span class="prio prio-{e(study.priority.lower())}">'
        f"{e(study.get_priority_display())}</span>"
        f"{badge}</td>\n"
        f'    <td>{e(facility.name)}<div class="muted">'
        f"{zone_time(study.exam_time, facility.zone)}</div></td>\n"
        f"    <td>{e(study.age_sex or '—')}</td>\n"
        f'    <td>{e(study.procedure or "—")}<div class="muted">{e(study.accession_number)} ·'
        f" {e(study.modalities)}</div>{history}</td>\n"
        f"    <td>{e(subspecialty or 'unclassified')}</td>\n"
        f'    <td>{study.number_of_instances}<div class="muted">'
        f"{'complete' if study.status == 'complete' else 'receiving…'}</div></td>\n"
        f"    <td>{sla_html(study, deadline_iso)}</td>\n"
        f'    <td data-testid="holder">{holder}</td>\n'
        f'    <td class="wl-actions">\n      {action}\n'
        f'      <a class="button secondary" href="{study.viewer_url}">Open</a>\n'
        '      <div class="row-message error" role="alert" data-testid="row-message"></div>\n'
        "    </td>\n  </tr>"
    )


def sla_html(study: Study, deadline_iso: str) -> str:
    """The SLA cell (``worklist/_sla.html``, which the operations row still includes)."""
    deadline = study.worklist_sla_deadline
    if not deadline:
        return '<span class="muted">clock not started</span>'
    start = f' data-clock-start="{_local_iso(study.clock_start)}"' if study.clock_start else ""
    return (
        f'<span class="countdown sla-{_escape(study.sla.state)}" data-testid="countdown"'
        f' data-deadline="{deadline_iso}"{start}>{_escape(study.sla.text)}</span>\n'
        f'<div class="muted">due {facility_due(deadline, study.facility)}</div>'
    )


def _escape(value) -> str:
    """``conditional_escape`` without its lazy-string wrapper (it was a tenth of a page's CPU)."""
    return value.__html__() if hasattr(value, "__html__") else html_escape(str(value))


def _local_iso(value: datetime | None) -> str:
    # what the template filter ``date:'c'`` writes: ISO 8601 in the current time zone
    return timezone.localtime(value).isoformat() if value else ""


def operations_row_html(study: Study, coverage) -> str:
    return render_to_string(OPERATIONS_ROW, {"s": study, "coverage": coverage})
