"""Peer-review pages (issue 7). Each view fetches through ``qa.selectors`` — which decides who may
see what — and calls one service. The reviewer's pages never receive the original reader; the
reader's feedback page never receives the reviewer."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

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
    services.adjudication_feedback_seen(adjudication_id=adjudication.pk, reader=request.user)
    return render(request, "qa/feedback_detail.html", {"adjudication": adjudication})


@director_only
def adjudication_list(request: HttpRequest) -> HttpResponse:
    return render(
        request, "qa/adjudication_list.html", {"reviews": selectors.adjudication_queue(request.user)}
    )


@director_only
def adjudication_detail(request: HttpRequest, review_id: int) -> HttpResponse:
    review: PeerReview = get_object_or_404(selectors.adjudication_queue(request.user), pk=review_id)
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
    except PermissionDenied as denied:
        return refuse(request, str(denied))
    except ValidationError as error:
        messages.error(request, _error_text(error))
    else:
        messages.success(request, "Referred for peer review.")
    return redirect(request.POST.get("next") or "qa:reviews")
