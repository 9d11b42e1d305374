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

from django.contrib.auth import get_user_model
from django.db.models import Q
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
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.pagination import BoundedLimitOffsetPagination
from accounts.roles import Role, has_role
from imaging.models import Study, age_on
from imaging.selectors import studies_visible_to
from radiology.statements import SLOT_IDS, Statement
from worklist import services
from worklist.selectors import WorklistParts, reader_list, worklist_for, worklist_parts
from worklist.tat import MILESTONES, study_turnaround, turnaround_minutes


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
    sla_deadline = serializers.DateTimeField(source="worklist_sla_deadline", allow_null=True)
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
        return _procedure(study)

    def get_patient_age(self, study: Study) -> int | None:
        return study.patient.age_on(timezone.localdate()) if study.patient_id else None

    @extend_schema_field(
        inline_serializer("Holder", {"id": serializers.IntegerField(), "name": serializers.CharField()}),
    )
    def get_claimed_by(self, study: Study) -> dict | None:
        return _person(study.worklist_claimed_by)

    @extend_schema_field(_Turnaround)
    def get_tat(self, study: Study) -> dict:
        return study_turnaround(study)


def _procedure(study: Study) -> str:
    return (study.order.procedure_text if study.order_id else "") or study.description


def worklist_entries(ids: list[int], today) -> list[dict]:
    """The rows of these studies, in this order, as ``WorklistEntrySerializer`` declares them (the
    OpenAPI schema), built from plain column values: DRF's per-field machinery, then model instances
    (~300 for 50 rows with six relations), each cost more CPU than the page's SQL (bench/worklist).
    tests/worklist/test_worklist.py holds the two equal. Datetimes are left to the JSON renderer,
    which writes them as the serializer's fields do."""
    rows = {row["id"]: row for row in _ENTRY_ROWS.values(ids=ids)}
    names: dict[int, str] = {}  # a reader's held rows share one holder: name them once
    return [_entry(rows[pk], today, names) for pk in ids if pk in rows]


def _entry(row: dict, today, names: dict[int, str]) -> dict:
    times = {
        "ordered_at": row["order__ordered_at"],
        "first_image_at": row["first_received_at"],
        "images_complete_at": row["completed_at"],
        "routed_at": row["assignment__routed_at"],
        **{f"{m}_at": row[f"turnaround__{m}_at"] for m in MILESTONES},
    }
    holder = row["worklist_claimed_by_id"]
    return {
        "id": row["id"],
        "accession_number": row["accession_number"],
        "facility": row["facility__code"],
        "facility_timezone": row["facility__timezone"],
        "priority": row["priority"],
        "is_stroke": row["is_stroke"],
        "subspecialty": row["subspecialty__code"],
        "modalities": row["modalities"],
        "procedure": row["order__procedure_text"] or row["description"],
        "patient_age": age_on(row["patient__birth_date"], today),
        "patient_sex": row["patient__sex"],
        "number_of_instances": row["number_of_instances"],
        "status": row["status"],
        "sla_deadline": row["worklist_sla_deadline"],
        "claimed_by": {"id": holder, "name": _holder_name(row, names)} if holder else None,
        "tat": {**times, "minutes": turnaround_minutes(times)},
    }


def _holder_name(row: dict, names: dict[int, str]) -> str:
    """str(User) of the joined columns — an unsaved instance once per holder, not once per row."""
    holder = row["worklist_claimed_by_id"]
    if holder not in names:
        fields = {name: row[f"worklist_claimed_by__{name}"] or "" for name in _NAME_FIELDS}
        names[holder] = str(get_user_model()(**fields))
    return names[holder]


WORKLIST_FILTERS = ("facility", "modality", "subspecialty", "priority", "accession")

_NAME_FIELDS = ("display_name", "first_name", "last_name", "username")
# The columns WorklistEntrySerializer reads (study_turnaround's included): a page loads 50 studies
# with six relations each, and every unused column is a value to convert (bench/worklist).
WORKLIST_ENTRY_COLUMNS = (
    *(
        "id",
        "accession_number",
        "worklist_claimed_by_id",
        "priority",
        "is_stroke",
        "modalities",
        "description",
        "number_of_instances",
    ),
    *("status", "worklist_sla_deadline", "first_received_at", "completed_at"),
    *(
        "facility__code",
        "facility__timezone",
        "subspecialty__code",
        "order__procedure_text",
        "order__ordered_at",
    ),
    *("patient__birth_date", "patient__sex", "assignment__routed_at"),
    *(f"worklist_claimed_by__{name}" for name in _NAME_FIELDS),
    *(f"turnaround__{milestone}_at" for milestone in MILESTONES),
)

# compiled once per process (radiology.statements), the page's ids its slot
_ENTRY_ROWS = Statement(
    "worklist.api_entries",
    lambda ids: Study.objects.filter(pk__any_of=ids).values(*WORKLIST_ENTRY_COLUMNS).order_by(),
    ids=SLOT_IDS,
    joins_as_written=True,  # the studies by id, then one-to-one lookups (radiology.statements)
)


class WorklistPagination(BoundedLimitOffsetPagination):
    """``limit``/``offset`` pages over the two parts of a worklist: the studies the caller holds (a
    handful, listed first), then the rest in reading order. Ids first, then the page's rows with their
    relations: joining patient, order and holder onto every eligible study before the sort costs as
    many lookups as the reader has studies. The ids and the count are the worklist page's
    (``worklist.selectors.reader_list``): statements compiled once per condition, reading the
    worklist indexes, not the studies."""

    def paginate_parts(self, parts: WorklistParts, request) -> list[int]:
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        # the others of this page are read with the counts (one pass over the reader's studies)
        ids, _counts = reader_list(parts, page=(self.offset, self.offset + self.limit))
        self.count = len(ids)
        self.display_page_controls = self.count > self.limit and self.template is not None
        return ids[self.offset : self.offset + self.limit]


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
        return worklist_for(self.request.user, at=timezone.now(), filters=self._filters())

    def _filters(self) -> dict[str, str]:
        return {key: self.request.query_params.get(key, "") for key in WORKLIST_FILTERS}

    def list(self, request: Request, *args, **kwargs) -> Response:
        parts = worklist_parts(request.user, at=timezone.now(), filters=self._filters())
        ids = self.paginator.paginate_parts(parts, request)
        return self.get_paginated_response(worklist_entries(ids, timezone.localdate()))


urlpatterns = [
    path("worklist/", WorklistView.as_view(), name="worklist"),
    path("worklist/<int:study_id>/claim/", ClaimView.as_view(), name="worklist-claim"),
    path("worklist/<int:study_id>/release/", ReleaseView.as_view(), name="worklist-release"),
]
