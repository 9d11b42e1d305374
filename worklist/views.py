"""The worklist pages (issue 4, DESIGN.md §8): the reader's list and the operations desk's list.

Both are a full page plus an HTMX partial of the live part (counts, rows, pagination). The page
applies the rows ``/ws/worklist/`` pushes to it (``worklist.broadcast``, rendered by the same row
templates, ``worklist.rows``) and re-fetches the partial only to resync (socket opened, a shift
boundary, every few minutes). What a page lists is always ``worklist.selectors`` (``worklist_parts``
for a reader, ``worklist_for`` for the desk: the same permission filter) and a pushed row goes only
to readers eligible now.

Claims and releases go to the REST API (``/api/v1/worklist/<id>/claim/``) with the session's CSRF
token: one code path for checks, answers and events."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.decorators import refuse
from accounts.roles import Role, has_role
from credentialing.eligibility import reader_facts
from credentialing.models import Subspecialty
from facilities.models import PriorityClass
from facilities.selectors import facilities_visible_to
from imaging.models import Study
from imaging.selectors import (
    display_problems_for,
    orders_to_match,
    studies_waiting_for_order,
    waited_minutes_set,
)
from qa.selectors import reviews_assigned_to
from worklist.clock import SLA_CRITICAL_SHARE, SLA_WARNING_SHARE
from worklist.live import strokes_acknowledged
from worklist.models import Shift
from worklist.order_match import (
    MatchNotPermitted,
    MatchRefused,
    MatchStudyMissing,
    matches_by_hand,
    may_match_orders,
    study_order_match,
    study_order_unmatch,
)
from worklist.rows import rows_decorate, rows_for_reader
from worklist.selectors import (
    WORKLIST_RELATED,
    coverage_for,
    reader_list,
    reader_standing,
    reassign_candidates,
    worklist_counts_seen,
    worklist_for,
    worklist_parts,
)

FILTERS = ("facility", "modality", "subspecialty", "priority")
MODALITIES = ("CT", "MR", "CR", "DX", "US", "NM", "PT", "MG", "XA", "RF")
READER_PAGE_SIZE = 100
# The desk's list can be thousands long; a page shows the most urgent, with the reasons for each.
OPERATIONS_PAGE_SIZE = 100
# the studies waiting for their order: a work queue, paged (``waiting_page``) like the API's limit
WAITING_PAGE_SIZE = 50

# A pushed page still resyncs now and then: nothing announces a shift's end or a licence lapsing.
READER_RESYNC_SECONDS = 300
OPERATIONS_RESYNC_SECONDS = 60


def reader_resync_seconds(user, at: datetime, shifts=None) -> int:
    """Seconds until the reader's page should resync: just after their next shift boundary (their
    list changes then without any study event), at most ``READER_RESYNC_SECONDS``. ``shifts``: their
    shifts overlapping the next ``READER_RESYNC_SECONDS`` (``reader_facts``'s), when already loaded."""
    horizon = resync_horizon(at)
    if shifts is None:
        shifts = Shift.objects.filter(radiologist=user, starts_at__lt=horizon, ends_at__gt=at).values_list(
            "starts_at", "ends_at"
        )
    else:
        shifts = [(s.starts_at, s.ends_at) for s in shifts]
    edges = [edge for start, end in shifts for edge in (start, end) if at < edge < horizon]
    return int((min(edges) - at).total_seconds()) + 2 if edges else READER_RESYNC_SECONDS


def resync_horizon(at: datetime) -> datetime:
    return at + timedelta(seconds=READER_RESYNC_SECONDS)


SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("j / ↓", "next study"),
    ("k / ↑", "previous study"),
    ("Enter", "open the selected study in the viewer"),
    ("c", "claim the selected study"),
    ("r", "release the selected study"),
    ("f", "go to the filters"),
    ("a", "acknowledge the code-stroke alert (stops its sound)"),
    ("?", "show or hide this list"),
    ("Esc", "close this list"),
)


def _is_operations(user) -> bool:
    return user.is_superuser or has_role(user, Role.OPERATIONS, Role.MEDICAL_DIRECTOR)


def _filters(query: QueryDict) -> dict[str, str]:
    return {name: query.get(name, "").strip() for name in FILTERS}


def _filter_choices(user) -> dict:
    return {
        "facilities": facilities_visible_to(user).order_by("name"),
        "modalities": MODALITIES,
        "subspecialties": Subspecialty.objects.order_by("name"),
        "priorities": PriorityClass.choices,
    }


def _page_ids(ids, request: HttpRequest, size: int, count: int) -> Page:
    """The page's ids (``ids``: a sliceable sequence of them — a queryset's ids, or a reader's
    ``PartsIds``; ``count``: the list's length, known from its per-priority counts, so the paginator
    does not count again)."""
    paginator = Paginator(ids, size)
    paginator.count = count  # a cached_property: set, it is not asked of the database
    page = paginator.get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)
    return page


def _requested_slice(request: HttpRequest, size: int) -> tuple[int, int]:
    """The slice of the list the page asked for (``?page=``, as ``Paginator.get_page`` reads it:
    anything but a number is page 1; a page past the end is read again as the last, by the paginator)."""
    try:
        number = max(1, int(request.GET.get("page", 1)))
    except (TypeError, ValueError):
        number = 1
    return ((number - 1) * size, number * size)


def _page(studies, request: HttpRequest, size: int, count: int) -> Page:
    # The page's ids first, then its rows with their relations: joining them onto every study of
    # the list before the sort costs a lookup per study.
    page = _page_ids(studies.values_list("pk", flat=True), request, size, count)
    rows = Study.objects.select_related(*WORKLIST_RELATED).in_bulk(page.object_list)
    page.object_list = [rows[pk] for pk in page.object_list if pk in rows]
    return page


def _live_context(
    request: HttpRequest, *, at: datetime, counts: dict[str, int], snapshot: str | None
) -> dict:
    """What both pages' live parts show besides their rows: filters, per-priority counts, the query,
    and the snapshot the counts were read in (the page tells events what they hold: worklist.js)."""
    filters = _filters(request.GET)
    query = request.GET.copy()
    query.pop("page", None)
    return {
        "now": at,
        "filters": filters,
        "filtered": any(filters.values()),
        "counts": counts,
        "snapshot": snapshot or "",
        "query": query.urlencode(),
        "sla_shares": {"warning": SLA_WARNING_SHARE, "critical": SLA_CRITICAL_SHARE},
    }


# --- the reader's worklist ------------------------------------------------------------------------


def _reader_context(request: HttpRequest) -> dict:
    at = timezone.now()
    # the reader's facts once, with the shifts up to the resync horizon: the list's filter and the
    # next shift boundary both come from them (only shifts covering ``at`` count for the filter)
    user = request.user
    reader = reader_facts([user.pk], shifts_from=at, shifts_until=resync_horizon(at)).get(user.pk)
    # held, then the others, as the API reads them (never one query over "held OR eligible")
    parts = worklist_parts(request.user, at=at, filters=_filters(request.GET), reader=reader)
    ids, counts = reader_list(parts, page=_requested_slice(request, READER_PAGE_SIZE))
    context = _live_context(request, at=at, counts=counts, snapshot=ids.snapshot)
    page = _page_ids(ids, request, READER_PAGE_SIZE, len(ids))
    # plain values, one query: model instances with five relations were a third of the page's CPU
    page.object_list = rows_for_reader(page.object_list, viewer_id=request.user.pk, at=at)
    context["page"], context["studies"] = page, page.object_list
    # the strokes on this page the reader acknowledged anywhere (the lock, another window): the page
    # raises no banner for them. Rows are shared between readers, so this travels beside them; asked
    # only when an unclaimed stroke is on the page.
    waiting = [row.pk for row in page.object_list if row.stroke and not row.claimed]
    context["acknowledged_strokes"] = " ".join(map(str, sorted(strokes_acknowledged(request.user, waiting))))
    if not context["studies"]:
        # say why it is empty, in the eligibility engine's words
        context["standings"] = reader_standing(
            request.user, at=at, facility_code=context["filters"]["facility"], reader=reader
        )
    context["rows_url"] = reverse("worklist:rows")
    context["resync_seconds"] = reader_resync_seconds(request.user, at, reader.shifts if reader else ())
    # Peer reviews wait at the foot of the list: low priority, never mixed with clinical reads.
    context["peer_reviews"] = reviews_assigned_to(request.user).count()
    return context


@login_required
def reader_worklist(request: HttpRequest) -> HttpResponse:
    """``/worklist/``: my studies, then the unclaimed ones I may read now (TOTP session: middleware)."""
    if _is_operations(request.user) and not has_role(request.user, Role.RADIOLOGIST):
        return redirect("worklist:operations")
    if not has_role(request.user, Role.RADIOLOGIST):
        return refuse(request, "The worklist is for radiologists and the operations desk.")
    context = {
        **_reader_context(request),
        **_filter_choices(request.user),
        "shortcuts": SHORTCUTS,
        "theme": "dark",  # a reading-room page (DESIGN.md §8)
        "alerts": True,
    }
    return render(request, "worklist/reader.html", context)


@login_required
def reader_rows(request: HttpRequest) -> HttpResponse:
    """The live part of ``/worklist/``, re-fetched on every event."""
    if not has_role(request.user, Role.RADIOLOGIST):
        return refuse(request, "The worklist is for radiologists.")
    return render(request, "worklist/_reader_live.html", _reader_context(request))


# --- the operations desk ----------------------------------------------------------------------------


def _operations_context(request: HttpRequest) -> dict:
    at = timezone.now()
    studies = worklist_for(request.user, at=at, filters=_filters(request.GET))
    counts, snapshot = worklist_counts_seen(studies)
    context = _live_context(request, at=at, counts=counts, snapshot=snapshot)
    context["page"] = _page(studies, request, OPERATIONS_PAGE_SIZE, sum(context["counts"].values()))
    studies = context["studies"] = rows_decorate(list(context["page"].object_list), viewer_id=None, at=at)
    unclaimed = [s for s in studies if not s.worklist_claimed_by_id]
    # the reasons only for the rows on this page: the engine over every reader, once per row
    context["coverage"] = coverage_for(unclaimed, at=at)
    context["breached"] = (
        worklist_for(request.user, at=at, filters=context["filters"])
        .filter(worklist_sla_deadline__lt=at)
        .count()
    )
    context["rows"] = [(s, context["coverage"].get(s.pk)) for s in studies]
    context.update(_waiting_context(request, at=at, facility=context["filters"]["facility"]))
    context["display_problems"] = display_problems_for(request.user, facility=context["filters"]["facility"])
    context["rows_url"] = reverse("worklist:operations_rows")
    # the desk's breach count and coverage move with the clock, not only with events
    context["resync_seconds"] = OPERATIONS_RESYNC_SECONDS
    return context


def _waiting_context(request: HttpRequest, *, at: datetime, facility: str) -> dict:
    """The studies waiting for their order, a page at a time (``waiting_page``), and for the
    operations desk each row's likeliest open orders and the open matches by hand it may undo."""
    waiting = Paginator(studies_waiting_for_order(request.user, at=at, facility=facility), WAITING_PAGE_SIZE)
    page = waiting.get_page(request.GET.get("waiting_page"))
    page.object_list = waited_minutes_set(page.object_list, at=at)
    query = request.GET.copy()
    query.pop("waiting_page", None)
    context = {
        "waiting_for_order": page.object_list,
        "waiting_page": page,
        "waiting_query": query.urlencode(),
        # the one-click match (worklist.order_match), for those who may: not the medical director
        "may_match_orders": may_match_orders(request.user),
        "matched_by_hand": [],
    }
    if context["may_match_orders"]:
        candidates = orders_to_match(page.object_list)
        for study in page.object_list:
            study.orders_to_match = candidates[study.pk]
        context["matched_by_hand"] = matches_by_hand(request.user, facility=facility)
    return context


@login_required
def operations_worklist(request: HttpRequest) -> HttpResponse:
    """``/operations/worklist/``: every open study, who holds it, its clock, and why nobody can read it."""
    if not _is_operations(request.user):
        return refuse(request, "The operations worklist is for the operations desk and the medical director.")
    context = {
        **_operations_context(request),
        **_filter_choices(request.user),
        "shortcuts": SHORTCUTS[:3] + SHORTCUTS[5:6] + SHORTCUTS[7:],
        "alerts": False,
    }
    return render(request, "worklist/operations.html", context)


@login_required
def operations_rows(request: HttpRequest) -> HttpResponse:
    if not _is_operations(request.user):
        return refuse(request, "The operations worklist is for the operations desk and the medical director.")
    return render(request, "worklist/_operations_live.html", _operations_context(request))


# --- matching a waiting study to its order ----------------------------------------------------------


@login_required
@require_POST
def order_match(request: HttpRequest, study_id: int) -> HttpResponse:
    """``POST /operations/worklist/<id>/match/`` (order, reason): the waiting row's one-click match.
    The write and every check are ``order_match.study_order_match``; a refusal says why (400/403)."""
    if not may_match_orders(request.user):
        return refuse(request, "Matching a study to its order is for the operations desk.")
    order_id = request.POST.get("order", "").strip()
    try:
        study = study_order_match(
            study_id=study_id,
            order_id=int(order_id) if order_id.isdigit() else 0,
            actor=request.user,
            reason=request.POST.get("reason", ""),
            at=timezone.now(),
        )
    except MatchNotPermitted as refusal:
        return refuse(request, str(refusal))
    except MatchRefused as refusal:
        back = reverse("worklist:operations")
        return render(request, "400.html", {"reason": str(refusal), "back": back}, status=400)
    messages.success(
        request, f"Study matched to order {study.order.accession_number}, now {study.get_priority_display()}."
    )
    return redirect("worklist:operations")


@login_required
@require_POST
def order_unmatch(request: HttpRequest, study_id: int) -> HttpResponse:
    """``POST /operations/worklist/<id>/unmatch/`` (reason): undo a match by hand made by mistake.
    The write and every check are ``order_match.study_order_unmatch`` (404/403/400 here; the
    REST API answers the "already" and "signed" refusals with 409)."""
    try:
        event = study_order_unmatch(
            study_id=study_id, actor=request.user, reason=request.POST.get("reason", ""), at=timezone.now()
        )
    except MatchStudyMissing as refusal:
        raise Http404(str(refusal)) from None
    except MatchNotPermitted as refusal:
        return refuse(request, str(refusal))
    except MatchRefused as refusal:
        back = reverse("worklist:operations")
        return render(request, "400.html", {"reason": str(refusal), "back": back}, status=400)
    study = event.study
    messages.success(
        request,
        f"Match to order {event.detail['accession']} undone: the study waits for its order again, "
        f"{study.get_priority_display()} as its images said.",
    )
    return redirect("worklist:operations")


# --- reassignment from the desk ---------------------------------------------------------------------


@login_required
def reassign_page(request: HttpRequest, study_id: int) -> HttpResponse:
    """``/operations/worklist/<id>/reassign/``: the eligible readers with their load, the others with
    the engine's reasons; a reason is required. The write is ``assignment.study_reassign``, the
    service the REST API calls, with the holder the operator saw (compare-and-set)."""
    from django.contrib.auth import get_user_model

    from worklist import assignment, services

    if not assignment.may_reassign(request.user):
        return refuse(request, "Reassignment is for the operations desk.")
    study = Study.objects.select_related(*WORKLIST_RELATED).filter(pk=study_id).first()
    if study is None:
        raise Http404("No such study.")
    at = timezone.now()
    holder = getattr(getattr(study, "assignment", None), "claimed_by_id", None)
    problem = ""
    if request.method == "POST":
        target = request.POST.get("to", "").strip()
        seen = request.POST.get("from", "").strip()
        to = None
        if target and target != "pool":
            pk = int(target) if target.isdigit() else 0
            to = get_user_model().objects.filter(pk=pk, is_active=True).first()
        if not target:
            problem = "Choose a reader (or back to the pool)."
        elif target != "pool" and to is None:
            problem = "That reader is not an active user."
        else:
            try:
                assignment.study_reassign(
                    study_id=study.pk,
                    actor=request.user,
                    to=to,
                    reason=request.POST.get("reason", ""),
                    at=at,
                    expected_from=int(seen) if seen.isdigit() else None,
                )
            except services.NotEligible as refusal:
                problem = f"{to} is not eligible: " + "; ".join(refusal.assessment.messages)
            except services.ClaimTaken as taken:
                problem = f"The study changed hands meanwhile: now {taken.holder or 'unclaimed'}. Look again."
            except services.ClaimError as error:
                problem = str(error)
            else:
                messages.success(request, f"{study.accession_number} reassigned to {to or 'the pool'}.")
                return redirect("worklist:operations")
    context = {
        "study": study,
        "holder": study.worklist_claimed_by if holder else None,
        "holder_id": holder,
        "candidates": reassign_candidates(study, at=at),
        "problem": problem,
        "reason": request.POST.get("reason", ""),
    }
    return render(request, "worklist/reassign.html", context, status=400 if problem else 200)
