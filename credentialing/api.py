"""REST API for credentialing (``/api/v1/credentialing/…``) and the eligibility question
(``/api/v1/eligibility/``), for hospitals' and credentials-verification systems.

Same rules as the pages: querysets come from ``credentialing.selectors`` (so out-of-scope records are
404), writes need credentialing staff (a radiologist may upload documents to their own dossier), and
every write goes through a service. The eligibility answer carries no patient data."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from credentialing import serializers as s
from credentialing import services
from credentialing.audit import record_document_access
from credentialing.eligibility import assess
from credentialing.models import (
    BoardCertification,
    DeaRegistration,
    Fellowship,
    MalpracticeCoverage,
    StateLicence,
)
from credentialing.selectors import (
    access_document_content,
    access_profile_for_upload,
    can_manage_credentialing,
    can_read_credentialing,
    documents_visible_to,
    eligibility_studies_for,
    is_radiologist,
    privileges_visible_to,
    profiles_visible_to,
)
from imaging.storage import StorageError, encrypted_read


class CredentialingStaffWrites(BasePermission):
    """Anyone authenticated may read what the selectors show them; only credentialing staff write.
    An anonymous caller is refused before the selectors run: 401 with the token challenge (the
    API's first authentication class), not an empty 200 list (issue 15 §9)."""

    def has_permission(self, request, view) -> bool:
        if not request.user.is_authenticated:
            return False
        return request.method in SAFE_METHODS or can_manage_credentialing(request.user)


def _api_errors(error: DjangoValidationError) -> ApiValidationError:
    return ApiValidationError(
        error.message_dict if hasattr(error, "error_dict") else {"detail": error.messages}
    )


def _int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ApiValidationError({name: "must be an integer id"}) from exc


class ProfileViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Radiologists' dossiers (reading identity). Credentialing staff, operations and the medical
    director see all; a radiologist their own."""

    serializer_class = s.ProfileSerializer
    permission_classes = [CredentialingStaffWrites]

    def get_queryset(self):
        profiles = profiles_visible_to(self.request.user).prefetch_related("subspecialties").order_by("pk")
        user_id = _int_param(self.request, "radiologist")
        return profiles.filter(user_id=user_id) if user_id else profiles

    def perform_create(self, serializer) -> None:
        data = serializer.validated_data
        try:
            serializer.instance = services.profile_open(
                actor=self.request.user,
                user=data["user"],
                npi=data.get("npi", ""),
                subspecialties=data.get("subspecialties", []),
            )
        except DjangoValidationError as error:
            raise _api_errors(error) from error

    def perform_update(self, serializer) -> None:
        data = serializer.validated_data
        profile = serializer.instance
        try:
            services.profile_update(
                actor=self.request.user,
                profile=profile,
                npi=data.get("npi", profile.npi),
                subspecialties=data.get("subspecialties", profile.subspecialties.all()),
            )
        except DjangoValidationError as error:
            raise _api_errors(error) from error


class _RecordViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """A dossier record kind: filter with ``?profile=<id>`` or ``?radiologist=<user id>``."""

    permission_classes = [CredentialingStaffWrites]
    model: type
    create_service = staticmethod(lambda **kw: None)
    update_service = staticmethod(lambda **kw: None)
    instance_kw = ""

    def get_queryset(self):
        records = self.model.objects.filter(profile__in=profiles_visible_to(self.request.user)).order_by("pk")
        if (profile_id := _int_param(self.request, "profile")) is not None:
            records = records.filter(profile_id=profile_id)
        if (user_id := _int_param(self.request, "radiologist")) is not None:
            records = records.filter(profile__user_id=user_id)
        if state := self.request.query_params.get("state"):
            records = records.filter(state=state.upper()) if hasattr(self.model, "state") else records
        return records

    def perform_create(self, serializer) -> None:
        fields = dict(serializer.validated_data)
        profile = fields.pop("profile")
        try:
            serializer.instance = self.create_service(actor=self.request.user, profile=profile, **fields)
        except DjangoValidationError as error:
            raise _api_errors(error) from error

    def perform_update(self, serializer) -> None:
        fields = dict(serializer.validated_data)
        fields.pop("profile", None)
        try:
            self.update_service(actor=self.request.user, **{self.instance_kw: serializer.instance}, **fields)
        except DjangoValidationError as error:
            raise _api_errors(error) from error

    @extend_schema(request=s.VerificationSerializer)
    @action(detail=True, methods=["post"])
    def verify(self, request: Request, pk=None) -> Response:
        """Record a primary-source verification (who = the caller)."""
        record = self.get_object()
        payload = s.VerificationSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            services.credential_verify(
                actor=request.user,
                credential=record,
                method=data["method"],
                document=data.get("document"),
                note=data.get("note", ""),
                verified_at=data.get("verified_at"),
            )
        except DjangoValidationError as error:
            raise _api_errors(error) from error
        return Response(self.get_serializer(record).data)


class LicenceViewSet(_RecordViewSet):
    """State licences; also ``?state=IL``."""

    model = StateLicence
    serializer_class = s.LicenceSerializer
    create_service = staticmethod(services.licence_record)
    update_service = staticmethod(services.licence_update)
    instance_kw = "licence"


class BoardViewSet(_RecordViewSet):
    model = BoardCertification
    serializer_class = s.BoardSerializer
    create_service = staticmethod(services.board_record)
    update_service = staticmethod(services.board_update)
    instance_kw = "board"


class FellowshipViewSet(_RecordViewSet):
    model = Fellowship
    serializer_class = s.FellowshipSerializer
    create_service = staticmethod(services.fellowship_record)
    update_service = staticmethod(services.fellowship_update)
    instance_kw = "fellowship"


class DeaViewSet(_RecordViewSet):
    model = DeaRegistration
    serializer_class = s.DeaSerializer
    create_service = staticmethod(services.dea_record)
    update_service = staticmethod(services.dea_update)
    instance_kw = "dea"


class MalpracticeViewSet(_RecordViewSet):
    model = MalpracticeCoverage
    serializer_class = s.MalpracticeSerializer
    create_service = staticmethod(services.malpractice_record)
    update_service = staticmethod(services.malpractice_update)
    instance_kw = "coverage"


class PrivilegeViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Facility privileges. Filter with ``?facility=CODE``, ``?radiologist=<user id>``, ``?status=``.
    Facility admins see who is privileged at their own facilities (no checklist, no dossier).
    POST opens an application; the status workflow is driven by the actions below."""

    permission_classes = [CredentialingStaffWrites]

    def get_serializer_class(self):
        if getattr(self, "swagger_fake_view", False) or can_read_credentialing(self.request.user):
            return s.PrivilegeSerializer
        if is_radiologist(self.request.user):
            return s.PrivilegeSerializer
        return s.FacilityReaderSerializer

    def get_queryset(self):
        privileges = privileges_visible_to(self.request.user).prefetch_related("checklist").order_by("pk")
        if code := self.request.query_params.get("facility"):
            privileges = privileges.filter(facility__code=code)
        if (user_id := _int_param(self.request, "radiologist")) is not None:
            privileges = privileges.filter(profile__user_id=user_id)
        if status_ := self.request.query_params.get("status"):
            privileges = privileges.filter(status=status_)
        return privileges

    def perform_create(self, serializer) -> None:
        data = serializer.validated_data
        try:
            serializer.instance = services.privilege_apply(
                actor=self.request.user,
                profile=data["profile"],
                facility=data["facility"],
                applied_on=data.get("applied_on"),
                scope_subspecialties=data.get("scope_subspecialties", []),
                scope_modalities=data.get("scope_modalities", []),
            )
        except DjangoValidationError as error:
            raise _api_errors(error) from error

    def _act(self, request: Request, payload_class, call) -> Response:
        privilege = self.get_object()
        data = {}
        if payload_class is not None:
            payload = payload_class(data=request.data)
            payload.is_valid(raise_exception=True)
            data = payload.validated_data
        try:
            call(privilege, data)
        except services.PrivilegeTransitionError as error:
            return Response({"detail": " ".join(error.messages)}, status=status.HTTP_409_CONFLICT)
        except DjangoValidationError as error:
            raise _api_errors(error) from error
        privilege.refresh_from_db()
        return Response(s.PrivilegeSerializer(privilege).data)

    @extend_schema(request=None, responses=s.PrivilegeSerializer)
    @action(detail=True, methods=["post"])
    def review(self, request: Request, pk=None) -> Response:
        """applied → in review."""
        return self._act(
            request, None, lambda p, d: services.privilege_review_start(actor=request.user, privilege=p)
        )

    @extend_schema(request=s.GrantSerializer, responses=s.PrivilegeSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk=None) -> Response:
        """in review → approved (every required checklist item complete); 409 otherwise."""
        return self._act(
            request,
            s.GrantSerializer,
            lambda p, d: services.privilege_approve(actor=request.user, privilege=p, **d),
        )

    @extend_schema(request=s.ProxyGrantSerializer, responses=s.PrivilegeSerializer)
    @action(detail=True, methods=["post"], url_path="approve-by-proxy")
    def approve_by_proxy(self, request: Request, pk=None) -> Response:
        """in review → approved by proxy, on the distant-site hospital's privileges."""
        return self._act(
            request,
            s.ProxyGrantSerializer,
            lambda p, d: services.privilege_approve_by_proxy(actor=request.user, privilege=p, **d),
        )

    @extend_schema(request=s.NoteSerializer, responses=s.PrivilegeSerializer)
    @action(detail=True, methods=["post"])
    def deny(self, request: Request, pk=None) -> Response:
        return self._act(
            request,
            s.NoteSerializer,
            lambda p, d: services.privilege_deny(actor=request.user, privilege=p, **d),
        )

    @extend_schema(request=s.NoteSerializer, responses=s.PrivilegeSerializer)
    @action(detail=True, methods=["post"])
    def lapse(self, request: Request, pk=None) -> Response:
        """End a grant now; the reader's worklist loses the facility on the next request."""
        return self._act(
            request,
            s.NoteSerializer,
            lambda p, d: services.privilege_lapse(actor=request.user, privilege=p, **d),
        )

    @extend_schema(request=s.GrantSerializer, responses=s.PrivilegeSerializer)
    @action(detail=True, methods=["post"])
    def reappoint(self, request: Request, pk=None) -> Response:
        return self._act(
            request,
            s.GrantSerializer,
            lambda p, d: services.privilege_reappoint(actor=request.user, privilege=p, **d),
        )


class DocumentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Document metadata; POST (multipart: profile, kind, title, file) uploads one — credentialing
    staff to any dossier, a radiologist to their own. ``…/content/`` downloads the file (staff and
    owner only; audited)."""

    serializer_class = s.DocumentSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def get_queryset(self):
        documents = documents_visible_to(self.request.user).order_by("pk")
        if (profile_id := _int_param(self.request, "profile")) is not None:
            documents = documents.filter(profile_id=profile_id)
        return documents

    @extend_schema(
        request={"multipart/form-data": s.DocumentUploadSerializer}, responses=s.DocumentSerializer
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        payload = s.DocumentUploadSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            profile = access_profile_for_upload(request.user, data["profile"].pk)
        except Http404 as exc:
            raise PermissionDenied("You may upload documents only to your own dossier.") from exc
        try:
            document = services.document_upload(
                actor=request.user,
                profile=profile,
                upload=data["file"],
                kind=data["kind"],
                title=data["title"],
            )
        except DjangoValidationError as error:
            raise ApiValidationError({"file": error.messages}) from error
        return Response(s.DocumentSerializer(document).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def content(self, request: Request, pk=None) -> HttpResponse:
        document = access_document_content(request.user, int(pk))
        try:
            content = encrypted_read(document.storage_path)
        except StorageError:
            return Response({"detail": "The stored file is missing or damaged."}, status=status.HTTP_410_GONE)
        record_document_access(document)
        response = HttpResponse(content, content_type=document.content_type)
        response["Content-Disposition"] = (
            f'attachment; filename="document-{document.pk}.{document.extension}"'
        )
        return response


class EligibilityView(APIView):
    """May this radiologist read this study now (or at ``at``)? Only the answer and its reasons —
    no patient, order or study details, so credentialing staff may ask too."""

    @extend_schema(
        parameters=[
            OpenApiParameter("radiologist", int, required=True, description="user id of the radiologist"),
            OpenApiParameter("study", int, required=True, description="study id"),
            OpenApiParameter(
                "at", OpenApiTypes.DATETIME, required=False, description="ISO 8601; default now"
            ),
        ],
        responses=s.AssessmentSerializer,
    )
    def get(self, request: Request) -> Response:
        from accounts.models import User

        radiologist_id, study_id = _int_param(request, "radiologist"), _int_param(request, "study")
        if radiologist_id is None or study_id is None:
            raise ApiValidationError({"detail": "radiologist and study are required"})
        if not (can_read_credentialing(request.user) or request.user.pk == radiologist_id):
            raise PermissionDenied("You may ask about your own eligibility only.")
        at = self._at(request)
        radiologist = get_object_or_404(User, pk=radiologist_id)
        study = get_object_or_404(
            eligibility_studies_for(request.user).select_related("facility", "subspecialty"), pk=study_id
        )
        assessment = assess(radiologist, study, at)
        body = {
            "radiologist": radiologist.pk,
            "study": study.pk,
            "at": at,
            "eligible": assessment.eligible,
            "reasons": [{"code": r.code.value, "message": r.message} for r in assessment.reasons],
        }
        return Response(s.AssessmentSerializer(body).data)

    @staticmethod
    def _at(request: Request):
        raw = request.query_params.get("at")
        if not raw:
            return timezone.now()
        at = parse_datetime(raw)
        if at is None or at.tzinfo is None:
            raise ApiValidationError(
                {"at": "an ISO 8601 date-time with its UTC offset, e.g. 2026-12-31T23:59:00-06:00"}
            )
        return at


router = SimpleRouter()
router.register("credentialing/profiles", ProfileViewSet, basename="credentialing-profile")
router.register("credentialing/licences", LicenceViewSet, basename="credentialing-licence")
router.register("credentialing/boards", BoardViewSet, basename="credentialing-board")
router.register("credentialing/fellowships", FellowshipViewSet, basename="credentialing-fellowship")
router.register("credentialing/dea", DeaViewSet, basename="credentialing-dea")
router.register("credentialing/malpractice", MalpracticeViewSet, basename="credentialing-malpractice")
router.register("credentialing/privileges", PrivilegeViewSet, basename="credentialing-privilege")
router.register("credentialing/documents", DocumentViewSet, basename="credentialing-document")

urlpatterns = [*router.urls, path("eligibility/", EligibilityView.as_view(), name="eligibility")]
