"""REST API for the reviewer: ``GET /api/v1/qa/reviews/`` (my open cases), ``GET …/<id>/`` (the
blinded case) and ``POST …/<id>/score/``. The serializers take ``qa.selectors.BlindedCase`` — a
structure with no field that could name the original reader — so no response can leak them."""

from __future__ import annotations

from dataclasses import asdict

from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.roles import Role, has_role
from qa import selectors, services
from qa.models import RadpeerScore


class BlindedCaseSerializer(serializers.Serializer):
    review_id = serializers.IntegerField()
    study_id = serializers.IntegerField()
    facility = serializers.CharField()
    procedure = serializers.CharField()
    modality = serializers.CharField()
    status = serializers.CharField()
    report_text = serializers.CharField(allow_null=True, help_text="Redacted; null until revealed")
    blind_impression = serializers.CharField(allow_blank=True)


class ScoreSerializer(serializers.Serializer):
    score = serializers.ChoiceField(choices=RadpeerScore.choices)
    comment = serializers.CharField(allow_blank=True, required=False, default="")


class _RadiologistOnly(IsAuthenticated):
    message = "Peer review cases are for radiologists."

    def has_permission(self, request, view) -> bool:
        return super().has_permission(request, view) and has_role(request.user, Role.RADIOLOGIST)


class ReviewListView(APIView):
    permission_classes = [_RadiologistOnly]

    @extend_schema(responses=BlindedCaseSerializer(many=True), summary="My open peer-review cases (blinded)")
    def get(self, request: Request) -> Response:
        # one query for the list; each case is an audited read when it is opened
        cases = [selectors.blinded_case(review) for review in selectors.reviews_assigned_to(request.user)]
        return Response(BlindedCaseSerializer([asdict(c) for c in cases], many=True).data)


class ReviewDetailView(APIView):
    permission_classes = [_RadiologistOnly]

    @extend_schema(
        responses={200: BlindedCaseSerializer, 403: OpenApiResponse(description="not your case")},
        summary="A blinded case; ?reveal=1 shows the redacted report (after any blind impression)",
    )
    def get(self, request: Request, review_id: int) -> Response:
        try:
            case = selectors.review_case_for_reviewer(
                request.user, review_id, reveal_report=request.query_params.get("reveal") == "1"
            )
        except PermissionDenied as denied:
            return Response({"detail": str(denied)}, status=403)
        return Response(BlindedCaseSerializer(asdict(case)).data)


class ReviewScoreView(APIView):
    permission_classes = [_RadiologistOnly]

    @extend_schema(
        request=ScoreSerializer,
        responses={200: BlindedCaseSerializer, 400: OpenApiResponse(description="invalid score or comment")},
        summary="Record the RADPEER score (comment required for 2b, 3a, 3b)",
    )
    def post(self, request: Request, review_id: int) -> Response:
        payload = ScoreSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            services.peer_review_score(review_id=review_id, user=request.user, **payload.validated_data)
        except PermissionDenied as denied:
            return Response({"detail": str(denied)}, status=403)
        except ValidationError as invalid:
            return Response({"detail": "; ".join(invalid.messages)}, status=400)
        except services.ReviewRefused as refused:
            return Response({"detail": str(refused)}, status=409)
        case = selectors.review_case_for_reviewer(request.user, review_id, reveal_report=True)
        return Response(BlindedCaseSerializer(asdict(case)).data)


urlpatterns = [
    path("qa/reviews/", ReviewListView.as_view(), name="qa-reviews"),
    path("qa/reviews/<int:review_id>/", ReviewDetailView.as_view(), name="qa-review"),
    path("qa/reviews/<int:review_id>/score/", ReviewScoreView.as_view(), name="qa-review-score"),
]
