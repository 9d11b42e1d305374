"""REST API for reports (DESIGN.md §5: ``reports/`` filterable by accession).

* ``GET /api/v1/reports/?accession=&facility=`` — the reports the caller may read: signed reports of
  studies they may see (``reports.selectors.reports_visible_to``), and the drafts of studies they hold.
* ``GET /api/v1/reports/<id>/`` — one report (404 when not readable); ``PATCH`` — draft values
  (the claimant only: 403 otherwise, 409 once final, 400 with the problems).
* ``POST /api/v1/reports/<id>/sign/`` — ``{"secret": password or TOTP code, "final": true}``.
* ``POST /api/v1/reports/<id>/addenda/`` — ``{"text": …, "secret": …}``.
* ``GET /api/v1/reports/charges/?facility=CODE&month=YYYY-MM`` — operations and that facility's admins.

Every read of a report is recorded in the audit log (``record_phi_access``)."""

from __future__ import annotations

from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import ReadKind, record_phi_access
from reports import services
from reports.models import Addendum, Charge, Report
from reports.selectors import access_report, charges_for, reports_visible_to

_STATUS = {
    services.NotClaimant: 403,
    services.NotEligibleToSign: 403,
    services.ReportFinal: 409,
    services.SigningLocked: 429,
    services.ChargeCorrectionForbidden: 403,
    services.ChargeMissing: 404,
    services.ChargeAlreadyCorrected: 409,
}


def _refusal(error: services.ReportError) -> Response:
    status = next((code for kind, code in _STATUS.items() if isinstance(error, kind)), 400)
    return Response({"detail": error.message, "problems": error.problems}, status=status)


class AddendumSerializer(serializers.ModelSerializer):
    author = serializers.StringRelatedField()

    class Meta:
        model = Addendum
        fields = ["id", "sequence", "text", "author", "signed_at", "signature"]


class ReportSerializer(serializers.ModelSerializer):
    accession = serializers.CharField(source="study.accession_number")
    facility = serializers.CharField(source="study.facility.code")
    template = serializers.CharField(source="template_version.__str__")
    signed_by = serializers.StringRelatedField()
    addenda = AddendumSerializer(many=True)

    class Meta:
        model = Report
        fields = [
            "id",
            "study",
            "accession",
            "facility",
            "template",
            "status",
            "values",
            "is_critical",
            "opened_at",
            "preliminary_at",
            "signed_by",
            "signed_at",
            "signed_text",
            "signed_sha256",
            "addenda",
        ]


class ValuesSerializer(serializers.Serializer):
    values = serializers.DictField(child=serializers.CharField(allow_blank=True, allow_null=True))


class SignSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="The signer's password or a current TOTP code.")
    final = serializers.BooleanField(default=True, help_text="false: a preliminary (wet) read.")


class AddendumInSerializer(serializers.Serializer):
    text = serializers.CharField()
    secret = serializers.CharField(help_text="The signer's password or a current TOTP code.")


_Problems = inline_serializer(
    "ReportRefusal",
    {"detail": serializers.CharField(), "problems": serializers.ListField(child=serializers.CharField())},
)
_refusals = {
    400: OpenApiResponse(_Problems, description="Values/required fields/critical result/re-authentication."),
    403: OpenApiResponse(_Problems, description="Not the claimant, or not eligible now (with the reasons)."),
    404: OpenApiResponse(description="No such report, or one the caller may not read."),
    409: OpenApiResponse(_Problems, description="The report is final: corrections are addenda."),
    429: OpenApiResponse(
        _Problems, description="Too many wrong passwords/codes: signing locked for a while."
    ),
}


def _detail(report: Report) -> Report:
    return Report.objects.select_related("study", "study__facility", "template_version", "signed_by").get(
        pk=report.pk
    )


class ReportList(ListAPIView):
    permission_classes = [IsAuthenticated]
    serializer_class = ReportSerializer

    @extend_schema(
        operation_id="reports_list",
        summary="Reports the caller may read",
        parameters=[
            OpenApiParameter("accession", str, description="The study's accession number"),
            OpenApiParameter("facility", str, description="Facility code"),
        ],
        tags=["reports"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        reports = (
            reports_visible_to(self.request.user)
            .select_related("study", "study__facility", "template_version", "signed_by")
            .prefetch_related("addenda__author")
            .order_by("-id")
        )
        if accession := self.request.query_params.get("accession"):
            reports = reports.filter(study__accession_number=accession)
        if facility := self.request.query_params.get("facility"):
            reports = reports.filter(study__facility__code=facility)
        return reports

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        for report in page if page is not None else queryset:
            record_phi_access(report, kind=ReadKind.REPORT)
        return page


class ReportDetail(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="reports_retrieve",
        responses={200: ReportSerializer, 404: _refusals[404]},
        tags=["reports"],
    )
    def get(self, request: Request, report_id: int) -> Response:
        return Response(ReportSerializer(access_report(request.user, report_id)).data)

    @extend_schema(
        operation_id="reports_values_update",
        summary="Save draft values (the claimant)",
        request=ValuesSerializer,
        responses={200: ReportSerializer, **_refusals},
        tags=["reports"],
    )
    def patch(self, request: Request, report_id: int) -> Response:
        report = access_report(request.user, report_id)
        data = ValuesSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            report = services.report_draft_save(
                report_id=report.pk,
                user=request.user,
                values=data.validated_data["values"],
                at=timezone.now(),
            )
        except services.ReportError as error:
            return _refusal(error)
        return Response(ReportSerializer(_detail(report)).data)


class ReportSign(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="reports_sign",
        summary="Sign the report (preliminary or final) with re-authentication",
        request=SignSerializer,
        responses={200: ReportSerializer, **_refusals},
        tags=["reports"],
    )
    def post(self, request: Request, report_id: int) -> Response:
        report = access_report(request.user, report_id)
        data = SignSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            report = services.report_sign(
                report_id=report.pk,
                user=request.user,
                secret=data.validated_data["secret"],
                at=timezone.now(),
                final=data.validated_data["final"],
                address=request.META.get("REMOTE_ADDR"),
            )
        except services.ReportError as error:
            return _refusal(error)
        return Response(ReportSerializer(_detail(report)).data)


class ReportAddenda(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="reports_addendum_create",
        summary="Sign an addendum to a final report",
        request=AddendumInSerializer,
        responses={201: AddendumSerializer, **_refusals},
        tags=["reports"],
    )
    def post(self, request: Request, report_id: int) -> Response:
        report = access_report(request.user, report_id)
        data = AddendumInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            addendum = services.addendum_sign(
                report_id=report.pk,
                user=request.user,
                text=data.validated_data["text"],
                secret=data.validated_data["secret"],
                at=timezone.now(),
                address=request.META.get("REMOTE_ADDR"),
            )
        except services.ReportError as error:
            return _refusal(error)
        return Response(AddendumSerializer(addendum).data, status=201)


class ChargeSerializer(serializers.ModelSerializer):
    facility = serializers.CharField(source="facility.code")
    accession = serializers.CharField(source="study.accession_number")
    radiologist = serializers.StringRelatedField()
    posted_by = serializers.StringRelatedField()

    class Meta:
        model = Charge
        fields = [
            "id",
            "facility",
            "study",
            "accession",
            "procedure_code",
            "rvu",
            "rate",
            "amount",
            "radiologist",
            "signed_at",
            "kind",
            "corrects",
            "reason",
            "posted_by",
            "posted_at",
        ]


class ChargeList(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="reports_charges",
        summary="A facility's charges for a month (operations and the facility's admins)",
        parameters=[
            OpenApiParameter("facility", str, required=True, description="Facility code"),
            OpenApiParameter("month", str, required=True, description="YYYY-MM, in the facility's time zone"),
        ],
        responses={
            200: ChargeSerializer(many=True),
            400: _Problems,
            404: OpenApiResponse(description="No such facility"),
        },
        tags=["reports"],
    )
    def get(self, request: Request) -> Response:
        facility_code = request.query_params.get("facility", "")
        month = request.query_params.get("month", "")
        try:
            _, charges = charges_for(request.user, facility_code=facility_code, month=month)
        except ValueError:
            return Response({"detail": "month: YYYY-MM, e.g. 2026-03", "problems": []}, status=400)
        return Response(ChargeSerializer(charges.select_related("facility"), many=True).data)


class ChargeCorrectionInSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="Why: kept on both new rows and shown in the CSV")
    void = serializers.BooleanField(default=False, help_text="Reverse only: the read is not billable")
    procedure_code = serializers.CharField(max_length=64, required=False, allow_blank=True)
    rvu = serializers.DecimalField(max_digits=6, decimal_places=2, required=False)
    rate = serializers.DecimalField(max_digits=8, decimal_places=2, required=False)
    amount = serializers.DecimalField(max_digits=10, decimal_places=2, required=False)


class ChargeCorrectionOutSerializer(serializers.Serializer):
    reversal = ChargeSerializer()
    correction = ChargeSerializer(allow_null=True)


class ChargeCorrections(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="reports_charge_correct",
        summary="Correct a charge with new rows: a reversal and the corrected charge (operations)",
        request=ChargeCorrectionInSerializer,
        responses={
            201: ChargeCorrectionOutSerializer,
            400: _Problems,
            403: OpenApiResponse(_Problems, description="Only operations correct charges."),
            404: OpenApiResponse(_Problems, description="No such charge."),
            409: OpenApiResponse(_Problems, description="Already corrected, or a reversal."),
        },
        tags=["reports"],
    )
    def post(self, request: Request, charge_id: int) -> Response:
        data = ChargeCorrectionInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        reason, void = changes.pop("reason"), changes.pop("void")
        try:
            reversal, correction = services.charge_correct(
                charge_id=charge_id, by=request.user, reason=reason, void=void, at=timezone.now(), **changes
            )
        except services.ReportError as error:
            return _refusal(error)
        body = {"reversal": reversal, "correction": correction}
        return Response(ChargeCorrectionOutSerializer(body).data, status=201)


urlpatterns = [
    path("reports/", ReportList.as_view(), name="reports-list"),
    path("reports/charges/", ChargeList.as_view(), name="reports-charges"),
    path(
        "reports/charges/<int:charge_id>/corrections/",
        ChargeCorrections.as_view(),
        name="reports-charge-correct",
    ),
    path("reports/<int:report_id>/", ReportDetail.as_view(), name="reports-detail"),
    path("reports/<int:report_id>/sign/", ReportSign.as_view(), name="reports-sign"),
    path("reports/<int:report_id>/addenda/", ReportAddenda.as_view(), name="reports-addenda"),
]
