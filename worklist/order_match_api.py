"""REST API for matching by hand a study that waits for its order (docs/orders.md), for interface
analysts and integration engines — the operations worklist's one-click match over HTTP:

* ``GET /api/v1/worklist/waiting-for-order/[?facility=CODE]`` — the studies past their facility's
  wait without an order (``imaging.selectors.studies_waiting_for_order``, oldest first, paged with
  ``limit``/``offset`` as the rest of the API), each with its likeliest open orders
  (``orders_to_match``, at most 3, the same facility's only).
* ``POST /api/v1/worklist/<study id>/order-match/`` ``{"order": <order id>, "reason": "…"}`` — the
  write is ``worklist.order_match.study_order_match``, the service behind the page's button: the
  same checks, the same ``order_matched`` study event and audit row under the caller's name.
* ``POST /api/v1/worklist/<study id>/order-unmatch/`` ``{"reason": "…"}`` — undo a match by hand
  (``study_order_unmatch``, the page's "Undo match"): **404** a study the caller may not see (checked
  first), **403** not operations, **400** no reason / not matched by hand / cancelled, **409** a
  signed report (preliminary or final) or no order any more (undone already).

Both are for the operations desk (role operations, or a superuser): **401** anonymous, **403**
anyone else (the medical director too: they see the page's list, not its buttons). The POST also
answers **400** (no reason, no such order, another facility's order, an order or a study no longer
open), **404** (no such study) and **409** (the study already has its order, or the order its
study — someone matched first)."""

from __future__ import annotations

from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.pagination import BoundedLimitOffsetPagination
from imaging.models import Order, Study
from imaging.selectors import orders_to_match, studies_waiting_for_order, waited_minutes_set
from worklist.order_match import (
    MatchConflict,
    MatchNotPermitted,
    MatchRefused,
    MatchStudyMissing,
    may_match_orders,
    study_order_match,
    study_order_unmatch,
)

_NOT_OPERATIONS = "Matching a study to its order is for the operations desk."


# A refusal of the match (or of its undo) as its HTTP answer: the subclasses are disjoint, so the
# one that applies decides; any other refusal is the caller's request (400).
_REFUSAL_STATUS = {MatchStudyMissing: 404, MatchNotPermitted: 403, MatchConflict: 409}


def _refusal_response(refusal: MatchRefused) -> Response:
    status = next((code for kind, code in _REFUSAL_STATUS.items() if isinstance(refusal, kind)), 400)
    return Response({"detail": str(refusal)}, status=status)


class MatchPatientSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    mrn = serializers.CharField()
    assigning_authority = serializers.CharField()
    name = serializers.CharField(source="display_name")


class CandidateOrderSerializer(serializers.ModelSerializer):
    """An open order of the study's facility that no study answers yet."""

    patient = MatchPatientSerializer()
    same_patient = serializers.SerializerMethodField(help_text="The order is for the study's own patient")

    class Meta:
        model = Order
        fields = [
            "id",
            "accession_number",
            "procedure_code",
            "procedure_text",
            "modality",
            "priority",
            "status",
            "ordered_at",
            "patient",
            "same_patient",
        ]

    def get_same_patient(self, order: Order) -> bool:
        return order.patient_id == self.context["study"].patient_id


class WaitingStudySerializer(serializers.ModelSerializer):
    facility = serializers.CharField(source="facility.code")
    orderless_wait_minutes = serializers.IntegerField(source="facility.orderless_wait_minutes")
    waited_minutes = serializers.IntegerField()
    patient = MatchPatientSerializer(allow_null=True)
    candidate_orders = serializers.SerializerMethodField()

    class Meta:
        model = Study
        fields = [
            "id",
            "facility",
            "accession_number",
            "description",
            "modalities",
            "priority",
            "status",
            "first_received_at",
            "waited_minutes",
            "orderless_wait_minutes",
            "patient",
            "candidate_orders",
        ]

    @extend_schema_field(CandidateOrderSerializer(many=True))
    def get_candidate_orders(self, study: Study) -> list[dict]:
        orders = self.context["candidates"].get(study.pk, [])
        return CandidateOrderSerializer(orders, many=True, context={"study": study}).data


class OrderMatchRequest(serializers.Serializer):
    order = serializers.IntegerField(help_text="Id of an open order of the study's facility")
    reason = serializers.CharField(max_length=300, help_text="Why (kept in the study's event history)")


OrderMatchResult = inline_serializer(
    "OrderMatchResult",
    {
        "study": serializers.IntegerField(),
        "order": serializers.IntegerField(),
        "order_match": serializers.CharField(help_text="How the study got its order: `manual`"),
        "accession_number": serializers.CharField(),
        "priority": serializers.CharField(),
        "is_stroke": serializers.BooleanField(),
    },
)

_Problem = inline_serializer("OrderMatchProblem", {"detail": serializers.CharField()})


class WaitingForOrderView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="worklist_waiting_for_order",
        summary="Studies waiting for their order, with candidate orders (operations)",
        parameters=[
            OpenApiParameter("facility", str, description="filter by facility code"),
            OpenApiParameter("limit", int, description="rows per page (default 50, at most 1000)"),
            OpenApiParameter("offset", int, description="rows to skip"),
        ],
        responses={
            200: inline_serializer(
                "WaitingForOrderPage",
                {
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": WaitingStudySerializer(many=True),
                },
            ),
            403: OpenApiResponse(_Problem, description="Not operations."),
        },
        tags=["worklist"],
    )
    def get(self, request: Request) -> Response:
        if not may_match_orders(request.user):
            return Response({"detail": _NOT_OPERATIONS}, status=403)
        facility = request.query_params.get("facility", "").strip()
        at = timezone.now()
        # paged as the rest of the API (limit/offset, {count, next, previous, results}), oldest first
        paginator = BoundedLimitOffsetPagination()
        page = paginator.paginate_queryset(
            studies_waiting_for_order(request.user, at=at, facility=facility), request, view=self
        )
        page = waited_minutes_set(page, at=at)
        context = {"candidates": orders_to_match(page)}
        return paginator.get_paginated_response(WaitingStudySerializer(page, many=True, context=context).data)


class OrderMatchView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="worklist_order_match",
        summary="Match a waiting study to its order by hand (operations)",
        request=OrderMatchRequest,
        responses={
            200: OrderMatchResult,
            400: OpenApiResponse(
                _Problem,
                description="No reason; no such order; another facility's order; order or study not open.",
            ),
            403: OpenApiResponse(_Problem, description="Not operations."),
            404: OpenApiResponse(_Problem, description="No such study."),
            409: OpenApiResponse(
                _Problem, description="The study already has its order, or the order its study."
            ),
        },
        tags=["worklist"],
    )
    def post(self, request: Request, study_id: int) -> Response:
        if not may_match_orders(request.user):
            return Response({"detail": _NOT_OPERATIONS}, status=403)
        body = OrderMatchRequest(data=request.data)
        if not body.is_valid():
            return Response({"detail": "Invalid request.", "errors": body.errors}, status=400)
        try:
            study = study_order_match(
                study_id=study_id,
                order_id=body.validated_data["order"],
                actor=request.user,
                reason=body.validated_data["reason"],
                at=timezone.now(),
            )
        except MatchRefused as refusal:
            return _refusal_response(refusal)
        return Response(
            {
                "study": study.pk,
                "order": study.order_id,
                "order_match": study.order_match,
                "accession_number": study.accession_number,
                "priority": study.priority,
                "is_stroke": study.is_stroke,
            }
        )


class OrderUnmatchRequest(serializers.Serializer):
    reason = serializers.CharField(
        max_length=300, help_text="Why the match was wrong (kept in the study's history)"
    )


OrderUnmatchResult = inline_serializer(
    "OrderUnmatchResult",
    {
        "study": serializers.IntegerField(),
        "order": serializers.IntegerField(
            allow_null=True, help_text="null: the study waits for its order again"
        ),
        "unmatched_order": serializers.IntegerField(help_text="The order the study had"),
        "order_match": serializers.CharField(help_text="empty: not matched"),
        "accession_number": serializers.CharField(help_text="The images' own accession, back"),
        "priority": serializers.CharField(help_text="What the images alone said; routing re-runs"),
        "is_stroke": serializers.BooleanField(),
        "claim_released": serializers.IntegerField(
            allow_null=True, help_text="The holder whose claim was released"
        ),
    },
)


class OrderUnmatchView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="worklist_order_unmatch",
        summary="Undo a match by hand of a study to an order (operations)",
        request=OrderUnmatchRequest,
        responses={
            200: OrderUnmatchResult,
            400: OpenApiResponse(
                _Problem, description="No reason; a match not made by hand; the study is cancelled."
            ),
            403: OpenApiResponse(_Problem, description="Not operations."),
            404: OpenApiResponse(_Problem, description="No such study, or one the caller may not see."),
            409: OpenApiResponse(
                _Problem, description="A report on the study is signed; or it has no order (undone already)."
            ),
        },
        tags=["worklist"],
    )
    def post(self, request: Request, study_id: int) -> Response:
        # The study first (404 for one the caller may not see, as access_study answers), then the
        # role (403), then the body: all in the service, so a caller refused learns nothing more.
        reason = request.data.get("reason", "") if hasattr(request.data, "get") else ""
        try:
            event = study_order_unmatch(
                study_id=study_id,
                actor=request.user,
                reason=reason if isinstance(reason, str) else "",
                at=timezone.now(),
            )
        except MatchRefused as refusal:
            return _refusal_response(refusal)
        study = event.study
        return Response(
            {
                "study": study.pk,
                "order": study.order_id,
                "unmatched_order": event.detail["order"],
                "order_match": study.order_match,
                "accession_number": study.accession_number,
                "priority": study.priority,
                "is_stroke": study.is_stroke,
                "claim_released": event.detail["claim_released"],
            }
        )


urlpatterns = [
    path("worklist/waiting-for-order/", WaitingForOrderView.as_view(), name="worklist-waiting-for-order"),
    path("worklist/<int:study_id>/order-match/", OrderMatchView.as_view(), name="worklist-order-match"),
    path("worklist/<int:study_id>/order-unmatch/", OrderUnmatchView.as_view(), name="worklist-order-unmatch"),
]
