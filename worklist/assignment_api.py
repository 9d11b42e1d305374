"""REST API for reassignment by operations: ``POST /api/v1/worklist/<study id>/reassign/``.

Body ``{"to": <user id> | null, "reason": "…", "from": <user id> | null}``: ``to`` null returns the
study to the pool; ``from`` (optional) is the holder the operator saw, so two operators (or an
operator and a reader) cannot overwrite each other unseen. Answers:

* **403** — the caller is not operations (or a superuser); or the target is not eligible, with every
  reason (``credentialing.eligibility.assess``);
* **400** — no reason, an unknown target, or nothing to change;
* **404** — no such study;
* **409** — the holder is no longer the one in ``from`` (the actual holder is named: the caller is
  operations);
* **200** — the new claim (``claimed_by`` null when returned to the pool)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from worklist import assignment, services
from worklist.api import ClaimSerializer, _Refusal, _study_for, _taken

# "from" is a Python keyword, hence the class built from a dict.
ReassignRequest = type(
    "ReassignRequest",
    (serializers.Serializer,),
    {
        "to": serializers.IntegerField(
            allow_null=True, help_text="User id of the eligible reader to give it to; null: back to the pool"
        ),
        "reason": serializers.CharField(max_length=300, help_text="Why (kept in the study's event history)"),
        "from": serializers.IntegerField(
            required=False,
            allow_null=True,
            help_text="User id of the holder the operator saw (null: unclaimed); 409 if it changed",
        ),
    },
)


class ReassignView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="worklist_reassign",
        summary="Reassign a study (operations)",
        request=ReassignRequest,
        responses={
            200: ClaimSerializer,
            400: OpenApiResponse(
                inline_serializer("ReassignProblem", {"detail": serializers.CharField()}),
                description="No reason, unknown target user, or nothing to change.",
            ),
            403: OpenApiResponse(
                _Refusal, description="Not operations; or the target is not eligible (`reasons`)."
            ),
            404: OpenApiResponse(description="No such study."),
            409: OpenApiResponse(_Refusal, description="The holder changed since the operator looked."),
        },
        tags=["worklist"],
    )
    def post(self, request: Request, study_id: int) -> Response:
        if not assignment.may_reassign(request.user):
            return Response({"detail": "Reassignment is for the operations desk."}, status=403)
        at = timezone.now()
        study = _study_for(request.user, study_id, at)
        body = ReassignRequest(data=request.data)
        if not body.is_valid():
            return Response({"detail": "Invalid request.", "errors": body.errors}, status=400)
        data = body.validated_data
        to = None
        if data["to"] is not None:
            to = get_user_model().objects.filter(pk=data["to"], is_active=True).first()
            if to is None:
                return Response({"detail": f"No active user {data['to']}."}, status=400)
        # "from" left out ≠ "from": null (the operator saw it unclaimed)
        expected = data.get("from", assignment.UNSEEN)
        try:
            claim = assignment.study_reassign(
                study_id=study.pk,
                actor=request.user,
                to=to,
                reason=data["reason"],
                at=at,
                expected_from=expected,
            )
        except services.NotEligible as refusal:
            return Response(
                {
                    "detail": f"{to} is not eligible to read this study.",
                    "reasons": refusal.assessment.messages,
                },
                status=403,
            )
        except (assignment.InvalidReassignment, services.NotClaimable) as problem:
            return Response({"detail": str(problem)}, status=400)
        except services.ClaimTaken as taken:
            if taken.holder is None:
                return Response({"detail": "The study is no longer claimed.", "claimed_by": None}, status=409)
            return _taken(request.user, taken.holder)
        return Response(ClaimSerializer(claim).data)


urlpatterns = [
    path("worklist/<int:study_id>/reassign/", ReassignView.as_view(), name="worklist-reassign"),
]
