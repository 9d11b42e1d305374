"""The worklist: which open studies a user sees, in reading order (DESIGN.md §1, issue 4).

* a radiologist: the studies they hold, then the unclaimed studies they are eligible for now
  (``credentialing.eligibility.readable_studies_q`` over the study's own columns — routing's state is
  copied onto ``imaging.Study`` for this — so a page is one index scan whatever the archive size:
  ``bench/worklist``);
  never a study someone else holds;
* operations and the medical director: every open study, held or not.

Order: held by me first, then priority class (stroke first), then the SLA deadline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db.models import Case, Count, F, Max, Q, QuerySet, Value, When, Window
from django.utils.functional import cached_property

from accounts.roles import Role, has_role
from credentialing.eligibility import (
    LOAD_FACTS,
    FacilityFacts,
    ReasonCode,
    StudyFacts,
    assess_facts,
    readable_studies_q,
    reader_facts,
)
from facilities.models import Facility, PriorityClass
from imaging.models import ON_WORKLIST, Study
from radiology.statements import Statement, StatementError, q_key
from radiology.visibility import CurrentSnapshot

# What a worklist row shows besides the study (loaded with it: no query per row).
WORKLIST_RELATED = (
    "facility",
    "subspecialty",
    "order",
    "patient",
    "assignment",
    "worklist_claimed_by",
    "turnaround",
)

# Reading order: priority class (stroke first), AI-raised first within it (``triage_rank``), then the
# SLA deadline, then arrival — the order of ``imaging.Study``'s ``study_worklist_order_idx``, so a first
# page stops after its rows.
READING_ORDER = ("priority_rank", "triage_rank", F("worklist_sla_deadline").asc(nulls_last=True), "id")


class WorklistParts:
    """A worklist as its two parts, each in reading order: what the user holds (listed first; empty
    for operations, whose list does not depend on who holds what) and everything else they see.

    Each part is its condition (None: nothing) and the filters; its queryset is built only when asked
    for (``held``, ``others``), because the page reads the parts through compiled ``Statement``s
    keyed by ``held_key``/``others_key`` and building a queryset is half the cost of compiling it."""

    def __init__(self, mine: Q | None, others: Q | None, filters: dict[str, str]):
        self.held_where, self.others_where, self.filters = mine, others, filters

    @cached_property
    def held(self) -> QuerySet[Study]:
        return _part(self.held_where, self.filters)

    @cached_property
    def others(self) -> QuerySet[Study]:
        return _part(self.others_where, self.filters)

    @cached_property
    def held_key(self) -> Hashable:
        return _part_key(self.held_where, self.filters)

    @cached_property
    def others_key(self) -> Hashable:
        return _part_key(self.others_where, self.filters)


def _part(where: Q | None, filters: dict[str, str]) -> QuerySet[Study]:
    """One part of a worklist, in reading order (None: nothing)."""
    if where is None:
        return Study.objects.none()
    return _filtered(Study.objects.filter(ON_WORKLIST), filters).filter(where).order_by(*READING_ORDER)


def _part_key(where: Q | None, filters: dict[str, str]) -> Hashable:
    """Everything ``_part`` builds from: the condition's tree and the filters set (None: a condition
    ``q_key`` cannot key — compiled per request, as before)."""
    try:
        condition = None if where is None else q_key(where)
    except StatementError:
        return None
    return (condition, tuple(sorted((k, v) for k, v in filters.items() if v)))


def _conditions(user, at: datetime, reader=LOAD_FACTS) -> tuple[Q | None, Q | None]:
    """(what the user holds, the rest they may see) over the studies on worklists; None: nothing.
    ``reader``: the user's facts if the caller loaded them (``readable_studies_q``)."""
    if user.is_superuser or has_role(user, Role.OPERATIONS, Role.MEDICAL_DIRECTOR):
        return None, Q()
    if has_role(user, Role.RADIOLOGIST):
        # What I hold (even if my shift just ended: I may finish it), else what I may claim now —
        # never a study someone else holds.
        readable = readable_studies_q(user, at, reader=reader)
        return Q(worklist_claimed_by=user), Q(worklist_claimed_by__isnull=True) & readable
    return None, None


def worklist_parts(
    user, *, at: datetime, filters: dict[str, str] | None = None, reader=LOAD_FACTS
) -> WorklistParts:
    """``reader``: the user's ``reader_facts``, when the caller has them (else loaded here)."""
    mine, others = _conditions(user, at, reader)
    return WorklistParts(mine, others, filters or {})


def worklist_for(user, *, at: datetime, filters: dict[str, str] | None = None) -> QuerySet[Study]:
    """The whole list in one queryset (pages, counts): held first, then reading order."""
    mine, others = _conditions(user, at)
    if others is None:
        return Study.objects.none()
    where = others if mine is None else mine | others
    studies = _filtered(Study.objects.filter(ON_WORKLIST).filter(where), filters or {})
    mine_first = Value(1) if mine is None else Case(When(mine, then=Value(0)), default=Value(1))
    return (
        studies.select_related(*WORKLIST_RELATED)
        .annotate(mine_first=mine_first)
        .order_by("mine_first", *READING_ORDER)
    )


class PartsIds:
    """A reader's list as one sequence of ids for ``Paginator``, read the way the API reads it
    (``WorklistPagination``): the held ids (a handful, loaded once), then a slice of the others'
    ids — never one query over "held OR eligible", whose plan walked every unclaimed open study of
    every facility (docs/worklist-fanout.md, fourth pass). ``len`` is the count the caller knows
    (the per-priority counts); the paginator must not ask. ``page``: a window of the others and their
    ids, read with the counts (``reader_list``): any slice within it is served from them."""

    def __init__(
        self,
        held: list[int],
        parts: WorklistParts,
        count: int,
        page: tuple[tuple[int, int], list[int]] | None = None,
        snapshot: str | None = None,
    ):
        self.held, self.parts, self.count, self.page = held, parts, count, page
        self.snapshot = snapshot  # what the others' counts saw (radiology.visibility); None: unknown

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, part: slice) -> list[int]:
        start, stop = part.start or 0, self.count if part.stop is None else part.stop
        ids = self.held[start:stop]
        window = _others_window(len(self.held), start, stop)
        if window is None:
            return ids
        if self.page is not None:
            (first, last), read = self.page
            if first <= window[0] and window[1] <= last:  # within the window read with the counts
                return ids + read[window[0] - first : window[1] - first]
        key = None if self.parts.others_key is None else (self.parts.others_key, window)
        return ids + _OTHERS_IDS.flat(key, self.parts.others_where, self.parts.filters, window)


def _others_window(held: int, start: int, stop: int) -> tuple[int, int] | None:
    """Which of the others a slice [start, stop) of the list takes, after ``held`` held studies
    (None: the held ones fill it)."""
    rest = stop - start - max(0, min(stop, held) - start)
    if rest <= 0:
        return None
    after = max(0, start - held)
    return (after, after + rest)


# The page's reads of its parts, compiled once per condition and filters (radiology.statements).
_HELD_RANKS = Statement(
    "worklist.held_ranks", lambda where, filters: _part(where, filters).values_list("pk", "priority_rank")
)
_OTHERS_IDS = Statement(
    "worklist.others_ids",
    lambda where, filters, window: _part(where, filters).values_list("pk", flat=True)[window[0] : window[1]],
)
_RANK_COUNTS = Statement(
    "worklist.rank_counts",
    lambda where, filters: _rank_counted(_part(where, filters)),
)
# The others' page and their count per priority in one statement: the counts are window functions
# over every row that passes the filter, taken before the page is cut, so the reader's eligible
# studies are scanned once (the facility index carries every column the filter and the order read),
# not once to count and again, along the reading order, to page (docs/worklist-fanout.md, eighth pass).
_RANK_COLUMNS = tuple(f"rank_{rank}_count" for rank in range(len(PriorityClass)))
_OTHERS_PAGE = Statement(
    "worklist.others_page",
    lambda where, filters, window: (
        _part(where, filters)
        .annotate(
            **{
                name: Window(Count("pk", filter=Q(priority_rank=rank)))
                for rank, name in enumerate(_RANK_COLUMNS)
            }
        )
        .annotate(snapshot=CurrentSnapshot())  # what the counts saw (radiology.visibility)
        .values_list("pk", *_RANK_COLUMNS, "snapshot")[window[0] : window[1]]
    ),
)


def reader_list(parts: WorklistParts, page: tuple[int, int] | None = None) -> tuple[PartsIds, dict[str, int]]:
    """A reader's list as ids to page over and its per-priority counts, from its two parts: the
    held studies' ids and ranks (one query on the held index), then the others counted by rank.
    ``page``: the (start, stop) slice of the list the caller will show: its others are read with
    their counts in one statement. Without it, or for a page past the end (no row to carry the
    counts), the others are counted alone and their slice read when paged."""
    held = _HELD_RANKS.rows(parts.held_key, parts.held_where, parts.filters)
    held_ids = [pk for pk, _rank in held]
    window = None if page is None else _others_window(len(held_ids), *page)
    read = _others_page(parts, window) if window is not None else None
    if read is None:
        counts = _counts_by_rank(_RANK_COUNTS.rows(parts.others_key, parts.others_where, parts.filters))
    else:
        counts = read[1]
    ranks = list(PriorityClass)
    for _pk, rank in held:
        counts[ranks[rank].value] += 1
    if read is None:
        return PartsIds(held_ids, parts, sum(counts.values())), counts
    return PartsIds(held_ids, parts, sum(counts.values()), (window, read[0]), snapshot=read[2]), counts


def _others_page(
    parts: WorklistParts, window: tuple[int, int]
) -> tuple[list[int], dict[str, int], str | None] | None:
    """The others' ids in ``window``, their counts by priority and the snapshot they were counted
    in (``radiology.visibility``; None without one); None when the window holds no row to carry the
    counts and cannot show that there are none (it starts past the first)."""
    key = None if parts.others_key is None else (parts.others_key, window)
    rows = _OTHERS_PAGE.rows(key, parts.others_where, parts.filters, window)
    if not rows:
        return ([], _counts_by_rank([]), None) if window[0] == 0 else None
    counted, snapshot = rows[0][1:-1], rows[0][-1]
    counts = {p.value: counted[rank] for rank, p in enumerate(PriorityClass)}
    return [row[0] for row in rows], counts, snapshot


def _filtered(studies: QuerySet[Study], filters: dict[str, str]) -> QuerySet[Study]:
    if filters.get("facility"):
        studies = studies.filter(facility__code=filters["facility"])
    if filters.get("modality"):
        studies = studies.filter(modalities__contains=filters["modality"].upper())
    if filters.get("subspecialty"):
        studies = studies.filter(subspecialty__code=filters["subspecialty"])
    if filters.get("priority"):
        studies = studies.filter(priority=filters["priority"].upper())
    if filters.get("accession"):
        studies = studies.filter(accession_number=filters["accession"])
    return studies


def worklist_counts(studies: QuerySet[Study]) -> dict[str, int]:
    """How many studies of each priority class a worklist holds (most urgent first, zeros kept)."""
    return _counts_by_rank(_rank_counted(studies))


def worklist_counts_seen(studies: QuerySet[Study]) -> tuple[dict[str, int], str | None]:
    """``worklist_counts`` and the snapshot they were counted in, from the same statement
    (radiology.visibility; None on SQLite or for an empty list): the operations page tells the
    events it receives which commits its counts hold already, as the reader's page does."""
    counted = _rank_counted(studies).annotate(snapshot=Max(CurrentSnapshot()))  # one per statement
    rows = list(counted.values_list("priority_rank", "n", "snapshot"))
    return _counts_by_rank((rank, n) for rank, n, _ in rows), (rows[0][2] if rows else None)


def _rank_counted(studies: QuerySet[Study]) -> QuerySet:
    # by the rank, which the worklist indexes carry (the priority itself would need every study row)
    return (
        studies.order_by()
        .values_list("priority_rank")
        .annotate(n=Count("pk"))
        .values_list("priority_rank", "n")
    )


def _counts_by_rank(rows) -> dict[str, int]:
    counted = dict(rows)
    return {p.value: counted.get(rank, 0) for rank, p in enumerate(PriorityClass)}


# --- why a list is empty, why nobody can read a study (the eligibility engine's reasons) ------------

# Rules that describe the reader at a facility, whatever the study: the subspecialty and the privilege
# scope depend on the study, so an empty worklist cannot honestly blame them.
_READER_WIDE = {ReasonCode.LICENCE, ReasonCode.VERIFICATION, ReasonCode.PRIVILEGES, ReasonCode.SHIFT}


@dataclass(frozen=True)
class FacilityStanding:
    facility: Facility
    reasons: list[str]

    @property
    def eligible(self) -> bool:
        return not self.reasons


def reader_standing(
    user, *, at: datetime, facility_code: str = "", reader=LOAD_FACTS
) -> list[FacilityStanding]:
    """For an empty worklist: at each facility where the reader holds (or held) privileges — or only
    the one filtered on — what keeps them from reading there now (licence, privileges, shift), in the
    eligibility engine's own words. Empty reasons: eligible there; there is simply nothing to read."""
    if reader is LOAD_FACTS:
        reader = reader_facts([user.pk], shifts_from=at).get(user.pk)
    if reader is None:
        return []
    # only facilities with the reader's own privilege records: a filter on any other code must not
    # tell them that facility exists (another client's facility is 404 everywhere)
    facilities = Facility.objects.filter(pk__in={p.facility_id for p in reader.privileges}).order_by("name")
    if facility_code:
        facilities = facilities.filter(code=facility_code)
    standings = []
    for facility in facilities:
        # a study of no particular subspecialty or modality at the facility: only reader-wide rules count
        study = StudyFacts(FacilityFacts.of(facility), None, None, None, None)
        reasons = assess_facts(reader, study, at).reasons
        standings.append(FacilityStanding(facility, [r.message for r in reasons if r.code in _READER_WIDE]))
    return standings


# Short labels for the operations desk, most fundamental first: a reader counts under the first rule
# they fail, so "2 off shift" are readers who would be eligible but for the rota.
_GAP_LABELS = (
    (ReasonCode.NOT_A_RADIOLOGIST, "{n} without a reading profile"),
    (ReasonCode.SUBSPECIALTY, "{n} of another subspecialty"),
    (ReasonCode.LICENCE, "{n} no {state} licence"),
    (ReasonCode.VERIFICATION, "{n} credentials unverified"),
    (ReasonCode.PRIVILEGES, "{n} no privileges here"),
    (ReasonCode.PRIVILEGE_SCOPE, "{n} privileges exclude it"),
    (ReasonCode.SHIFT, "{n} off shift"),
)


@dataclass(frozen=True)
class Coverage:
    eligible: int
    gaps: list[str]  # compact counts, e.g. ["2 off shift", "1 no IL licence"]
    details: list[tuple[str, list[str]]]  # (reader, every reason), for the tooltip
    readers: tuple[str, ...] = ()  # the names behind ``eligible``: ops asks "who is it?"


def coverage_for(studies: list[Study], *, at: datetime) -> dict[int, Coverage]:
    """Who could read each of these studies now (the operations page calls it for the rows it shows
    only). The readers' facts are loaded once; each study is then assessed in memory."""
    if not studies:
        return {}
    User = get_user_model()
    readers = list(
        User.objects.filter(radiologist_profile__isnull=False, is_active=True).order_by(
            "display_name", "username"
        )
    )
    facts = reader_facts([u.pk for u in readers], shifts_from=at)
    result = {}
    for study in studies:
        study_facts = StudyFacts.of(study)
        assessed = [(u, assess_facts(facts.get(u.pk), study_facts, at)) for u in readers]
        result[study.pk] = _coverage(assessed, study.facility.state)
    return result


def _coverage(assessed, state: str) -> Coverage:
    eligible = sum(1 for _, a in assessed if a.eligible)
    first_failures = Counter(
        next(code for code, _ in _GAP_LABELS if code in {r.code for r in a.reasons})
        for _, a in assessed
        if not a.eligible
    )
    gaps = [
        label.format(n=first_failures[code], state=state)
        for code, label in _GAP_LABELS
        if first_failures[code]
    ]
    details = [(str(u), a.messages) for u, a in assessed if not a.eligible]
    return Coverage(eligible, gaps, details, tuple(str(u) for u, a in assessed if a.eligible))


@dataclass(frozen=True)
class ReassignCandidate:
    reader: object  # the user
    eligible: bool
    reasons: list[str]  # the engine's words when not eligible
    load_rvu: object  # Decimal: RVUs held now
    load_studies: int
    holds_it: bool


def reassign_candidates(study: Study, *, at: datetime) -> list[ReassignCandidate]:
    """Every reader with a reading profile, for the reassign form: eligible ones first (lowest load
    first), each with their current load; the others with the engine's reasons, so the desk sees why
    the one it had in mind is not offered. Same engine and load as push routing."""
    from worklist.assignment import reader_loads  # assignment imports this module

    User = get_user_model()
    readers = list(
        User.objects.filter(radiologist_profile__isnull=False, is_active=True).order_by(
            "display_name", "username"
        )
    )
    facts = reader_facts([u.pk for u in readers], shifts_from=at)
    loads = reader_loads([u.pk for u in readers])
    study_facts = StudyFacts.of(study)
    holder = getattr(getattr(study, "assignment", None), "claimed_by_id", None)
    rows = []
    for user in readers:
        assessment = assess_facts(facts.get(user.pk), study_facts, at)
        rvu, count = loads.get(user.pk, (0, 0))
        rows.append(
            ReassignCandidate(user, assessment.eligible, assessment.messages, rvu, count, user.pk == holder)
        )
    return sorted(rows, key=lambda c: (not c.eligible, c.load_rvu, str(c.reader)))


def next_held_study(user, *, after: int, at: datetime) -> Study | None:
    """Sign & next (issue 14): the first study in reading order that ``user`` holds, other than the one
    just signed; None when they hold no other (the caller opens their worklist)."""
    held = worklist_parts(user, at=at).held
    return held.exclude(pk=after).first()
