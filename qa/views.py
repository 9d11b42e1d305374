"""Peer-review pages (issue 7). Each view fetches through ``qa.selectors`` — which decides who may
see what — and calls one service. The reviewer's pages never receive the original reader; the
reader's feedback page never receives the reviewer."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts.audit import ReadKind, record_phi_access
from accounts.decorators import refuse, role_required
from accounts.roles import Role, has_role
from qa import selectors, services
from qa.models import PeerReview, RadpeerScore

radiologists_only = role_required(
    lambda user: has_role(user, Role.RADIOLOGIST), "Peer review cases are for radiologists."
)
director_only = role_required(
    lambda user: has_role(user, Role.MEDICAL_DIRECTOR), "Adjudication is the medical director's."
)
referrers_only = role_required(
    lambda user: has_role(user, Role.RADIOLOGIST, Role.MEDICAL_DIRECTOR),
    "Radiologists and the medical director refer cases for peer review.",
)


def _error_text(error: Exception) -> str:
    return "; ".join(error.messages) if isinstance(error, ValidationError) else str(error)


@radiologists_only
def review_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "qa/review_list.html",
        {
            "reviews": selectors.reviews_assigned_to(request.user),
            "feedback": selectors.feedback_for_reader(request.user),
        },
    )


@radiologists_only
def review_detail(request: HttpRequest, review_id: int) -> HttpResponse:
    try:
        case = selectors.review_case_for_reviewer(
            request.user, review_id, reveal_report=request.GET.get("reveal") == "1"
        )
    except PermissionDenied as denied:
        return refuse(request, str(denied))
    return render(request, "qa/review_detail.html", {"case": case, "scores": RadpeerScore.choices})


@radiologists_only
@require_POST
def review_impression(request: HttpRequest, review_id: int) -> HttpResponse:
    try:
        services.peer_review_impression_record(
            review_id=review_id, user=request.user, text=request.POST.get("impression", "")
        )
    except PermissionDenied as denied:
        return refuse(request, str(denied))
    except (ValidationError, services.ReviewRefused) as error:
        messages.error(request, _error_text(error))
    return redirect("qa:review", review_id=review_id)


@radiologists_only
@require_POST
def review_score(request: HttpRequest, review_id: int) -> HttpResponse:
    try:
        services.peer_review_score(
            review_id=review_id,
            user=request.user,
            score=request.POST.get("score", ""),
            comment=request.POST.get("comment", ""),
        )
    except PermissionDenied as denied:
        return refuse(request, str(denied))
    except (ValidationError, services.ReviewRefused) as error:
        messages.error(request, _error_text(error))
        return redirect(reverse("qa:review", args=[review_id]) + "?reveal=1")
    messages.success(request, "Score recorded. Thank you.")
    return redirect("qa:reviews")


@radiologists_only
def feedback_detail(request: HttpRequest, adjudication_id: int) -> HttpResponse:
    adjudication = get_object_or_404(selectors.feedback_for_reader(request.user), pk=adjudication_id)
    record_phi_access(adjudication.review.report.study, kind=ReadKind.PEER_REVIEW)
    services.adjudication_feedback_seen(adjudication_id=adjudication.pk, reader=request.user)
    return render(request, "qa/feedback_detail.html", {"adjudication": adjudication})


@director_only
def adjudication_list(request: HttpRequest) -> HttpResponse:
    unassignable, unassignable_total = selectors.unassignable_cases(request.user, timezone.now())
    return render(
        request,
        "qa/adjudication_list.html",
        {
            "reviews": selectors.adjudication_queue(request.user),
            "unassignable": unassignable,
            "unassignable_hidden": unassignable_total - len(unassignable),
        },
    )


@director_only
@require_POST
def review_assign(request: HttpRequest, review_id: int) -> HttpResponse:
    """The director gives an unassignable case (listed on the adjudication page) a reviewer."""
    reviewer_id = request.POST.get("reviewer", "")
    try:
        review = services.peer_review_assign(
            review_id=review_id, reviewer_id=int(reviewer_id) if reviewer_id.isdigit() else 0, by=request.user
        )
    except PeerReview.DoesNotExist:
        raise Http404("No such peer review") from None
    except (ValidationError, services.ReviewRefused) as error:
        messages.error(request, _error_text(error))
    else:
        messages.success(request, f"Case {review.pk} assigned to {review.reviewer}.")
    return redirect("qa:adjudication")


@director_only
def adjudication_detail(request: HttpRequest, review_id: int) -> HttpResponse:
    review: PeerReview = get_object_or_404(selectors.adjudication_queue(request.user), pk=review_id)
    record_phi_access(review.report.study, kind=ReadKind.PEER_REVIEW)
    if request.method == "POST":
        try:
            services.adjudication_decide(
                review_id=review.pk,
                director=request.user,
                final_score=request.POST.get("final_score", ""),
                feedback=request.POST.get("feedback", ""),
                addendum_requested=request.POST.get("addendum_requested") == "on",
            )
        except (ValidationError, services.ReviewRefused) as error:
            messages.error(request, _error_text(error))
        else:
            messages.success(request, "Adjudication recorded; the reader sees your feedback.")
            return redirect("qa:adjudication")
    return render(request, "qa/adjudication_detail.html", {"review": review, "scores": RadpeerScore.choices})


@referrers_only
@require_POST
def refer(request: HttpRequest, report_id: int) -> HttpResponse:
    try:
        services.peer_review_refer(
            report_id=report_id, by=request.user, reason=request.POST.get("reason", "")
        )
    except ObjectDoesNotExist as missing:  # no such report: 404, not a 500 (issue 15 §6)
        raise Http404("No such report.") from missing
    except PermissionDenied as denied:
        return refuse(request, str(denied))
    except ValidationError as error:
        messages.error(request, _error_text(error))
    else:
        messages.success(request, "Referred for peer review.")
    # only a path on this site: ``next`` from the form must not send the reader elsewhere (issue 15 §6)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=False):
        target = ""
    return redirect(target or "qa:reviews")


# --- dashboard and quarterly reports -------------------------------------------------------------

quarterly_readers = role_required(
    lambda user: (
        user.is_superuser
        or has_role(user, Role.MEDICAL_DIRECTOR, Role.OPERATIONS)
        or (has_role(user, Role.FACILITY_ADMIN) and selectors.quarterly_facilities_for(user).exists())
    ),
    "Quarterly QA reports are for the medical director, operations and each facility's admin.",
)


def _quarter_parse(text: str) -> tuple[int, int]:
    """``2026-Q3`` → (2026, 3); the current quarter (UTC) when empty or malformed."""
    from django.utils import timezone

    from qa.metrics import quarter_of

    year, _, quarter = text.partition("-Q")
    if year.isdigit() and quarter in {"1", "2", "3", "4"}:
        return int(year), int(quarter)
    return quarter_of(timezone.now().date())


@director_only
def dashboard(request: HttpRequest) -> HttpResponse:
    from datetime import UTC

    from django.contrib.auth import get_user_model

    from qa.metrics import quarter_bounds
    from qa.quarterly import (
        algorithm_figures,
        critical_communication,
        final_reads,
        tat_rows,
        volume_by_modality,
    )

    year, quarter = _quarter_parse(request.GET.get("quarter", ""))
    start, end = quarter_bounds(year, quarter, UTC)
    reads = list(final_reads(start=start, end=end))
    # The director sees every reader by name (DESIGN.md §1); pseudonyms map back for them only.
    names = {
        selectors.reader_pseudonym(u.pk): str(u)
        for u in get_user_model().objects.filter(radiologist_profile__isnull=False)
    }
    by = {
        key: selectors.discrepancy_rates(by=key, start=start, end=end)
        for key in ("reader", "modality", "facility")
    }
    tat = tat_rows(reads)
    total = sum(r.reads for r in tat)
    critical, critical_within = critical_communication(reads)
    return render(
        request,
        "qa/dashboard.html",
        {
            "year": year,
            "quarter": quarter,
            "previous": f"{year - 1}-Q4" if quarter == 1 else f"{year}-Q{quarter - 1}",
            "next": f"{year + 1}-Q1" if quarter == 4 else f"{year}-Q{quarter + 1}",
            "by_reader": [(names.get(r.key, r.key), r) for r in by["reader"]],
            "by_modality_rows": [(r.key or "—", r) for r in by["modality"]],
            "by_facility_rows": [(r.key, r) for r in by["facility"]],
            "tat": tat,
            "volume": volume_by_modality(reads),
            "sla_compliance": (sum(r.within_sla for r in tat) / total) if total else None,
            "critical": critical,
            "critical_within": critical_within,
            "ai_algorithms": algorithm_figures(start=start, end=end, facility_ids=None),
        },
    )


@quarterly_readers
def quarterly_list(request: HttpRequest) -> HttpResponse:
    from qa.models import QuarterlyReport
    from qa.quarterly import quarterly_report_generate

    facilities = selectors.quarterly_facilities_for(request.user)
    if request.method == "POST":
        facility = facilities.filter(code=request.POST.get("facility", "")).first()
        year, quarter = _quarter_parse(request.POST.get("quarter", ""))
        if facility is None:
            return refuse(request, "You may generate reports only for your own facilities.")
        quarterly_report_generate(facility=facility, year=year, quarter=quarter)
        messages.success(request, f"{facility.name} {year}-Q{quarter} generated.")
        return redirect("qa:quarterly")
    reports = (
        QuarterlyReport.objects.filter(facility__in=facilities).select_related("facility").defer("pdf", "csv")
    )
    return render(request, "qa/quarterly_list.html", {"reports": reports, "facilities": facilities})


@quarterly_readers
def quarterly_download(
    request: HttpRequest, facility_code: str, year: int, quarter: int, kind: str
) -> HttpResponse:
    if kind not in {"pdf", "csv"}:
        raise Http404("PDF or CSV")
    report = selectors.access_quarterly_report(request.user, facility_code, year, quarter)
    name = f"qa-{facility_code}-{year}-Q{quarter}.{kind}"
    if kind == "pdf":
        response = HttpResponse(bytes(report.pdf), content_type="application/pdf")
    else:
        response = HttpResponse(report.csv, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
