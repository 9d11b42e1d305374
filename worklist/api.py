"""REST API for claims: ``POST /api/v1/worklist/<study id>/claim/`` and ``…/release/``.

Answers, in this order:

* **404** — the caller may not see the study. What a caller may see is ``imaging.selectors
  .studies_visible_to`` (for a radiologist: exactly the studies they are eligible for now), widened for
  radiologists to the facilities where they hold a licence and privileges now
  (``reading_facility_ids``, what their facility pages show): such a reader, off shift or of another
  subspecialty, learns *why* they cannot claim (403) rather than a bare 404. Another facility's study
  is 404, the same as a missing one.
* **403** — not eligible, with every reason (``credentialing.eligibility.assess``).
* **409** — someone else holds it. Only operations (and the medical director) learn who; a reader is
  told "claimed by another radiologist".
* **200** — the claim (or the release).

Radiologists must have a verified second factor (``SecondFactorRequiredMiddleware`` refuses the
session before the view runs)."""

from __future__ import annotations

from django.db.models import Count, Q, Window
from django.http import Http404
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
from rest_framework.generics import ListAPIView
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.roles import Role, has_role
from imaging.models import Study
from imaging.selectors import studies_visible_to
from worklist import services
from worklist.selectors import WORKLIST_RELATED, worklist_for
from worklist.tat import MILESTONES, study_turnaround


def _person(user) -> dict | None:
    return {"id": user.pk, "name": str(user)} if user else None


class ClaimSerializer(serializers.Serializer):
    study = serializers.IntegerField(source="study_id")
    claimed_by = serializers.SerializerMethodField()
    claimed_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(
        inline_serializer("Person", {"id": serializers.IntegerField(), "name": serializers.CharField()}),
    )
    def get_claimed_by(self, claim) -> dict | None:
        return _person(claim.claimed_by)


_Refusal = inline_serializer(
    "ClaimRefusal",
    {
        "detail": serializers.CharField(),
        "reasons": serializers.ListField(child=serializers.CharField(), required=False),
        "claimed_by": serializers.DictField(required=False, allow_null=True),
    },
)


def _may_name_holders(user) -> bool:
    return user.is_superuser or has_role(user, Role.OPERATIONS, Role.MEDICAL_DIRECTOR)


def _study_for(user, study_id: int, at) -> Study:
    """The study if the caller may see it (see the module docstring), else 404."""
    where = Q(pk__in=studies_visible_to(user, at=at).values("pk"))
    if has_role(user, Role.RADIOLOGIST):
        from credentialing.eligibility import reading_facility_ids

        where |= Q(facility_id__in=reading_facility_ids(user, at))
    study = Study.objects.filter(where, pk=study_id).first()
    if study is None:
        raise Http404("No such study")
    return study


def _taken(user, holder) -> Response:
    if holder is None:
        return Response({"detail": "You do not hold this study.", "claimed_by": None}, status=409)
    if _may_name_holders(user):
        return Response(
            {"detail": f"Claimed by {_person(holder)['name']}.", "claimed_by": _person(holder)}, 409
        )
    return Response({"detail": "Claimed by another radiologist."}, status=409)


_responses = {
    200: ClaimSerializer,
    403: OpenApiResponse(_Refusal, description="Not eligible: `reasons` lists every failing rule."),
    404: OpenApiResponse(description="No such study, or one the caller may not see."),
    409: OpenApiResponse(
        _Refusal, description="Held by someone else (named to operations only) / release by a non-holder."
    ),
}


class ClaimView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="worklist_claim",
        summary="Claim a study (exclusive)",
        request=None,
        responses=_responses,
        tags=["worklist"],
    )
    def post(self, request: Request, study_id: int) -> Response:
        at = timezone.now()
        study = _study_for(request.user, study_id, at)
        try:
            claim = services.study_claim(study_id=study.pk, user=request.user, at=at)
        except services.NotEligible as refusal:
            return Response(
                {"detail": "Not eligible to read this study.", "reasons": refusal.assessment.messages}, 403
            )
        except services.NotClaimable as refusal:
            return Response({"detail": str(refusal).capitalize() + "."}, status=409)
        except services.ClaimTaken as taken:
            return _taken(request.user, taken.holder)
        return Response(ClaimSerializer(claim).data)


class ReleaseView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="worklist_release",
        summary="Release a study one holds",
        request=None,
        responses={k: v for k, v in _responses.items() if k != 403},
        tags=["worklist"],
    )
    def post(self, request: Request, study_id: int) -> Response:
        study = _study_for(request.user, study_id, timezone.now())
        try:
            claim = services.study_release(study_id=study.pk, user=request.user)
        except services.ClaimTaken as taken:
            return _taken(request.user, taken.holder)
        return Response(ClaimSerializer(claim).data)


_TAT_TIMES = ("ordered", "first_image", "images_complete", "routed", *MILESTONES)
_Turnaround = inline_serializer(
    "Turnaround",
    {
        **{f"{name}_at": serializers.DateTimeField(allow_null=True) for name in _TAT_TIMES},
        "minutes": inline_serializer(
            "TurnaroundMinutes",
            {
                name: serializers.FloatField(allow_null=True)
                for name in ("complete_to_final", "order_to_final", "final_to_delivered")
            },
        ),
    },
)


class WorklistEntrySerializer(serializers.ModelSerializer):
    """A worklist row: what a reader needs to pick a study — no patient name or MRN (the viewer
    shows those, and records the read)."""

    facility = serializers.CharField(source="facility.code")
    facility_timezone = serializers.CharField(source="facility.timezone")
    subspecialty = serializers.CharField(source="subspecialty.code", allow_null=True, default=None)
    procedure = serializers.SerializerMethodField()
    patient_age = serializers.SerializerMethodField()
    patient_sex = serializers.CharField(source="patient.sex", allow_null=True, default=None)
    sla_deadline = serializers.DateTimeField(source="assignment.sla_deadline", allow_null=True)
    claimed_by = serializers.SerializerMethodField()
    tat = serializers.SerializerMethodField()

    class Meta:
        model = Study
        fields = [
            "id",
            "accession_number",
            "facility",
            "facility_timezone",
            "priority",
            "is_stroke",
            "subspecialty",
            "modalities",
            "procedure",
            "patient_age",
            "patient_sex",
            "number_of_instances",
            "status",
            "sla_deadline",
            "claimed_by",
            "tat",
        ]

    def get_procedure(self, study: Study) -> str:
        return (study.order.procedure_text if study.order_id else "") or study.description

    def get_patient_age(self, study: Study) -> int | None:
        return study.patient.age_on(timezone.localdate()) if study.patient_id else None

    @extend_schema_field(
        inline_serializer("Holder", {"id": serializers.IntegerField(), "name": serializers.CharField()}),
    )
    def get_claimed_by(self, study: Study) -> dict | None:
        return _person(study.assignment.claimed_by)

    @extend_schema_field(_Turnaround)
    def get_tat(self, study: Study) -> dict:
        return study_turnaround(study)


WORKLIST_FILTERS = ("facility", "modality", "subspecialty", "priority", "accession")


class WorklistPagination(LimitOffsetPagination):
    """``limit``/``offset`` pages of study ids; the total rides on the page query (``COUNT(*) OVER
    ()``) instead of a second pass over every eligible study."""

    def paginate_queryset(self, queryset, request, view=None) -> list[int]:
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        window = queryset.annotate(total=Window(Count("pk"))).values_list("pk", "total")
        rows = list(window[self.offset : self.offset + self.limit])
        # past the last page there is no row to carry the total: count it
        self.count = rows[0][1] if rows else (queryset.count() if self.offset else 0)
        self.display_page_controls = self.count > self.limit and self.template is not None
        return [pk for pk, _total in rows]


class WorklistView(ListAPIView):
    """``GET /api/v1/worklist/``: a radiologist's claimed studies, then the unclaimed studies they are
    eligible for now; operations and the medical director see every open study. Sorted by priority
    class, then SLA deadline. Filters: ``facility`` (code), ``modality``, ``subspecialty`` (code),
    ``priority``, ``accession``. Paginated with ``limit``/``offset``."""

    serializer_class = WorklistEntrySerializer
    permission_classes = [IsAuthenticated]
    pagination_class = WorklistPagination

    @extend_schema(
        parameters=[OpenApiParameter(name, str, description=f"filter by {name}") for name in WORKLIST_FILTERS]
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = {key: self.request.query_params.get(key, "") for key in WORKLIST_FILTERS}
        return worklist_for(self.request.user, at=timezone.now(), filters=filters)

    def list(self, request: Request, *args, **kwargs) -> Response:
        # Sort and count on the study ids alone, then load the page's rows with their relations:
        # joining patient, order and holder onto every eligible study before the sort (what the
        # ORM would do) costs as many lookups as the reader has studies, not as the page has rows.
        page_ids = self.paginate_queryset(self.get_queryset())
        rows = Study.objects.select_related(*WORKLIST_RELATED).in_bulk(page_ids)
        page = [rows[pk] for pk in page_ids if pk in rows]
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


urlpatterns = [
    path("worklist/", WorklistView.as_view(), name="worklist"),
    path("worklist/<int:study_id>/claim/", ClaimView.as_view(), name="worklist-claim"),
    path("worklist/<int:study_id>/release/", ReleaseView.as_view(), name="worklist-release"),
]
