"""REST API for orders and studies (DESIGN.md §5: ``orders/`` and ``studies/``, filterable by accession).

* ``GET /api/v1/orders/`` and ``GET /api/v1/studies/`` — what the caller may see, newest first,
  paginated like the rest of the API (``limit``/``offset``). Filters: ``accession``, ``mrn`` and
  ``issuer`` (the MRN's assigning authority), ``facility`` (code), ``status`` (one or several,
  comma-separated), ``date`` / ``date_from`` / ``date_to`` (days at the facility, inclusive: an order's
  order time, a study's study time). A malformed filter is a 400 that names it.
* ``GET /api/v1/orders/<id>/``, ``GET /api/v1/studies/<id>/`` — one record; 404 for one the caller may
  not see, exactly as for a missing one.

Who sees what is ``imaging.selectors`` (orders, studies and patients of the facilities a facility admin
or its API token administers; a radiologist's readable studies and their orders; operations and the
medical director everything). Credentialing staff are refused (403): their work involves no patient
data. Anonymous calls get 401 with ``WWW-Authenticate: Token``.

Every response carries patient data, so every list is audited as a search (``record_phi_search``:
the filters, how many matched, a read row per record returned) and every detail as a read."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django.db.models import QuerySet
from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.generics import ListAPIView
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import ReadKind, record_phi_search
from accounts.authentication import AuditedTokenAuthentication
from facilities.selectors import local_time_q
from imaging.models import Order, OrderMatch, OrderStatus, Patient, Study, StudyStatus
from imaging.selectors import (
    access_order,
    access_study,
    may_read_patient_data,
    orders_visible_to,
    patient_issuer_q,
    studies_visible_to,
)


class MayReadPatientData(BasePermission):
    message = "Your role does not include access to patient data."

    def has_permission(self, request, view) -> bool:
        return may_read_patient_data(request.user)


class PatientDataAPIView(APIView):
    """Token first: its WWW-Authenticate challenge makes an anonymous call 401, not 403."""

    authentication_classes = (AuditedTokenAuthentication, SessionAuthentication)
    permission_classes = (IsAuthenticated, MayReadPatientData)


# --- serializers -----------------------------------------------------------------------------------


class PatientSummarySerializer(serializers.ModelSerializer):
    issuer = serializers.CharField(source="assigning_authority", help_text="The MRN's assigning authority")

    class Meta:
        model = Patient
        fields = ["id", "mrn", "issuer", "family_name", "given_name", "middle_name", "birth_date", "sex"]


class ProcedureSerializer(serializers.Serializer):
    code = serializers.CharField(source="procedure_code")
    text = serializers.CharField(source="procedure_text")
    coding_system = serializers.CharField(
        source="procedure_coding_system", help_text="OBR-4.3, e.g. C4 = CPT-4"
    )


class OrderingProviderSerializer(serializers.Serializer):
    id = serializers.CharField(source="ordering_provider_id")
    name = serializers.CharField(source="ordering_provider_name")
    xcn = serializers.DictField(
        source="ordering_provider_xcn",
        child=serializers.CharField(),
        help_text="ORC-12 / OBR-16 by component (id, family, given, middle, suffix, prefix, degree, …)",
    )


class ReasonForStudySerializer(serializers.Serializer):
    code = serializers.CharField(default="", help_text="OBR-31.1, e.g. I63.9")
    text = serializers.CharField(default="", help_text="OBR-31.2")
    system = serializers.CharField(default="", help_text="OBR-31.3, e.g. I10 = ICD-10")


class VisitSerializer(serializers.Serializer):
    """PV1 as the hospital sent it: the ORU echoes it back."""

    patient_class = serializers.CharField(help_text="PV1-2 (table 0004: E, I, O, …)")
    location = serializers.CharField(source="patient_location", help_text="PV1-3 as sent")
    number = serializers.CharField(source="visit_number", help_text="PV1-19.1")
    number_authority = serializers.CharField(source="visit_number_authority", help_text="PV1-19.4")


class OrderSerializer(serializers.ModelSerializer):
    """An order row: what ReadRoom decided (status, priority class) and the whole order as the
    hospital sent it, each field kept by HL7's update rule (docs/orders.md)."""

    facility = serializers.CharField(source="facility.code")
    patient = PatientSummarySerializer()
    procedure = ProcedureSerializer(source="*")
    ordering_provider = OrderingProviderSerializer(source="*")
    studies = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    priority_code = serializers.CharField(help_text="The priority as sent (TQ1-9 / ORC-7.6 / OBR-5: S, A, R)")
    reasons_for_study = ReasonForStudySerializer(many=True, help_text="Every OBR-31 repetition")
    clinical_information = serializers.CharField(help_text="OBR-13")
    notes = serializers.ListField(child=serializers.CharField(), help_text="NTE-3 of the order, one each")
    clinical_history = serializers.CharField(
        read_only=True, help_text="Every reason with its code, OBR-13 and the notes, as the reader sees it"
    )
    copies_to = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()), help_text="OBR-28, each XCN by component"
    )
    visit = VisitSerializer(source="*")

    class Meta:
        model = Order
        fields = [
            "id",
            "facility",
            "accession_number",
            "accession_issuer",
            "placer_order_number",
            "placer_order_issuer",
            "filler_order_number",
            "filler_order_issuer",
            "status",
            "priority",
            "priority_code",
            "procedure",
            "modality",
            "requested_procedure_id",
            "scheduled_procedure_step_id",
            "study_instance_uid",
            "reason",
            "reasons_for_study",
            "clinical_information",
            "notes",
            "clinical_history",
            "ordering_provider",
            "copies_to",
            "visit",
            "ordered_at",
            "scheduled_at",
            "cancelled_at",
            "updated_at",
            "patient",
            "studies",
        ]


class StudySerializer(serializers.ModelSerializer):
    facility = serializers.CharField(source="facility.code")
    patient = PatientSummarySerializer(allow_null=True)
    modalities = serializers.SerializerMethodField()

    class Meta:
        model = Study
        fields = [
            "id",
            "facility",
            "study_instance_uid",
            "accession_number",
            "accession_issuer",
            "status",
            "priority",
            "is_stroke",
            "modalities",
            "description",
            "body_part",
            "study_datetime",
            "number_of_series",
            "number_of_instances",
            "first_received_at",
            "completed_at",
            "updated_at",
            "order",
            "order_match",
            "patient",
        ]

    def get_modalities(self, study: Study) -> list[str]:
        return [m for m in study.modalities.split("\\") if m]


# --- filters ---------------------------------------------------------------------------------------


class RecordFilters(serializers.Serializer):
    """The query parameters of both lists (validated: a malformed one is a 400 naming it)."""

    STATUSES: tuple[str, ...] = ()

    accession = serializers.CharField(required=False, help_text="Accession number (exact)")
    mrn = serializers.CharField(required=False, help_text="The patient's MRN (exact)")
    issuer = serializers.CharField(
        required=False, help_text="The MRN's assigning authority (PID-3.4 / Issuer of Patient ID), exact"
    )
    facility = serializers.CharField(required=False, help_text="Facility code")
    status = serializers.CharField(required=False, help_text="One status or several, comma-separated")
    date = serializers.DateField(required=False, help_text="YYYY-MM-DD: that day at the facility")
    date_from = serializers.DateField(required=False, help_text="YYYY-MM-DD: from that day at the facility")
    date_to = serializers.DateField(
        required=False, help_text="YYYY-MM-DD: up to that day at the facility, inclusive"
    )

    def validate_status(self, value: str) -> list[str]:
        statuses = [s.strip() for s in value.split(",") if s.strip()]
        unknown = [s for s in statuses if s not in self.STATUSES]
        if unknown or not statuses:
            raise serializers.ValidationError(
                f"{', '.join(unknown) or value!r}: one of {', '.join(self.STATUSES)}"
            )
        return statuses

    def validate(self, attrs: dict) -> dict:
        if "date" in attrs and ({"date_from", "date_to"} & attrs.keys()):
            raise serializers.ValidationError({"date": "Give either date or date_from/date_to."})
        start, end = attrs.get("date_from"), attrs.get("date_to")
        if start and end and start > end:
            raise serializers.ValidationError({"date_to": "date_to is before date_from."})
        return attrs


class OrderFilters(RecordFilters):
    STATUSES = tuple(OrderStatus.values)


class StudyFilters(RecordFilters):
    STATUSES = tuple(StudyStatus.values)
    ORDER_MATCHES = {"none": OrderMatch.NONE, **{m.value: m for m in OrderMatch if m.value}}

    order_match = serializers.ChoiceField(
        required=False,
        choices=list(ORDER_MATCHES),
        help_text="How the study was matched to its order (accession, study_uid, fallback, manual), or none",
    )


def _day_range(filters: dict) -> tuple[datetime | None, datetime | None]:
    """The filters' days as half-open wall-clock bounds (``local_time_q``)."""
    first: date | None = filters.get("date") or filters.get("date_from")
    last: date | None = filters.get("date") or filters.get("date_to")
    start = datetime.combine(first, time.min) if first else None
    end = datetime.combine(last + timedelta(days=1), time.min) if last else None
    return start, end


def records_filtered(records: QuerySet, filters: dict, *, patient: str, when: str) -> QuerySet:
    """Apply validated filters; ``patient`` is the path to the patient, ``when`` the dated field."""
    if accession := filters.get("accession"):
        records = records.filter(accession_number=accession)
    if mrn := filters.get("mrn"):
        records = records.filter(**{f"{patient}__mrn": mrn})
    if issuer := filters.get("issuer"):
        records = records.filter(patient_issuer_q([issuer], path=f"{patient}__"))
    if facility := filters.get("facility"):
        records = records.filter(facility__code=facility)
    if statuses := filters.get("status"):
        records = records.filter(status__in=statuses)
    if "order_match" in filters:  # studies only
        records = records.filter(order_match=StudyFilters.ORDER_MATCHES[filters["order_match"]])
    start, end = _day_range(filters)
    if start or end:
        records = records.filter(local_time_q(when, start, end))
    return records


# --- views -----------------------------------------------------------------------------------------


class AuditedList(PatientDataAPIView, ListAPIView):
    """A filtered list of patient records; each page is audited as a search."""

    filters_class: type[RecordFilters]
    dated_field: str
    patient_path = "patient"

    def visible(self) -> QuerySet:
        raise NotImplementedError

    def filters(self) -> dict:
        filters = self.filters_class(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return filters.validated_data

    def get_queryset(self) -> QuerySet:
        self.validated_filters = self.filters()
        records = self.visible().order_by("-id")
        return records_filtered(
            records, self.validated_filters, patient=self.patient_path, when=self.dated_field
        )

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        rows = page if page is not None else list(queryset)
        query = {name: [str(self.request.query_params[name])] for name in self.validated_filters}
        total = getattr(getattr(self, "paginator", None), "count", None)
        record_phi_search(self.queryset_model, via="REST", query=query, returned=rows, total=total)
        return page

    @property
    def queryset_model(self):
        return self.serializer_class.Meta.model


_refusals = {
    400: OpenApiResponse(description="A malformed filter (the body names it)."),
    401: OpenApiResponse(description="No credentials (session or `Authorization: Token …`)."),
    403: OpenApiResponse(
        description="The caller's role has no access to patient data (credentialing staff)."
    ),
}


class OrderList(AuditedList):
    serializer_class = OrderSerializer
    filters_class = OrderFilters
    dated_field = "ordered_at"

    @extend_schema(
        operation_id="orders_list",
        summary="Orders the caller may see, newest first",
        parameters=[OrderFilters],
        responses={200: OrderSerializer(many=True), **_refusals},
        tags=["orders"],
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def visible(self) -> QuerySet:
        return (
            orders_visible_to(self.request.user)
            .select_related("facility", "patient")
            .prefetch_related("studies")
        )


class StudyList(AuditedList):
    serializer_class = StudySerializer
    filters_class = StudyFilters
    dated_field = "study_datetime"

    @extend_schema(
        operation_id="studies_list",
        summary="Studies the caller may see, newest first",
        parameters=[StudyFilters],
        responses={200: StudySerializer(many=True), **_refusals},
        tags=["studies"],
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def visible(self) -> QuerySet:
        return studies_visible_to(self.request.user).select_related("facility", "patient")


_not_found = OpenApiResponse(description="No such record, or one the caller may not see.")


class OrderDetail(PatientDataAPIView):
    @extend_schema(
        operation_id="orders_retrieve",
        responses={200: OrderSerializer, 404: _not_found, **_refusals},
        tags=["orders"],
    )
    def get(self, request: Request, order_id: int) -> Response:
        return Response(OrderSerializer(access_order(request.user, order_id)).data)  # audited


class StudyDetail(PatientDataAPIView):
    @extend_schema(
        operation_id="studies_retrieve",
        responses={200: StudySerializer, 404: _not_found, **_refusals},
        tags=["studies"],
    )
    def get(self, request: Request, study_id: int) -> Response:
        return Response(
            StudySerializer(access_study(request.user, study_id, kind=ReadKind.API)).data
        )  # audited


urlpatterns = [
    path("orders/", OrderList.as_view(), name="orders-list"),
    path("orders/<int:order_id>/", OrderDetail.as_view(), name="orders-detail"),
    path("studies/", StudyList.as_view(), name="studies-list"),
    path("studies/<int:study_id>/", StudyDetail.as_view(), name="studies-detail"),
]
