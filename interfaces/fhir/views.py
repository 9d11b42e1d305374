"""FHIR R4 read views under ``/fhir/r4/``: thin — authenticate (session or ``Authorization: Token``,
as the REST API and DICOMweb), fetch through the permission-checked selector (which also writes the
PHI access audit row), build the resource, answer ``application/fhir+json``. Errors are
OperationOutcome resources with the HTTP status FHIR's RESTful API gives them (401/403/404)."""

from __future__ import annotations

import json

from django.db.models import prefetch_related_objects
from django.http import Http404, HttpResponse
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from accounts.authentication import AuditedTokenAuthentication
from imaging.selectors import access_study
from interfaces.fhir.resources import imaging_study_resource

FHIR_JSON = "application/fhir+json"


def fhir_response(resource: dict, *, status: int = 200) -> HttpResponse:
    response = HttpResponse(json.dumps(resource), status=status, content_type=f"{FHIR_JSON}; charset=utf-8")
    response["Cache-Control"] = "no-store, private"  # patient data
    return response


def operation_outcome(status: int, code: str, text: str) -> HttpResponse:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }
    return fhir_response(outcome, status=status)


class FhirView(APIView):
    """Base of every FHIR read view (the reports app's DiagnosticReport view derives from it)."""

    # Token first: its WWW-Authenticate challenge makes an anonymous call 401, not 403.
    authentication_classes = (AuditedTokenAuthentication, SessionAuthentication)
    permission_classes = (IsAuthenticated,)
    renderer_classes = (JSONRenderer,)
    schema = None  # FHIR resources are described by the FHIR specification, not our OpenAPI schema

    def handle_exception(self, exc):
        if isinstance(exc, Http404):
            return operation_outcome(404, "not-found", str(exc) or "No such resource")
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            response = operation_outcome(401, "login", str(exc.detail))
            if header := self.get_authenticate_header(self.request):
                response["WWW-Authenticate"] = header
            return response
        if isinstance(exc, exceptions.PermissionDenied):
            return operation_outcome(403, "forbidden", str(exc.detail))
        return super().handle_exception(exc)


class ImagingStudyView(FhirView):
    def get(self, request, study_id: int):
        study = access_study(request.user, study_id)  # 404 for what the user may not see; audited
        prefetch_related_objects([study], "series")
        return fhir_response(imaging_study_resource(study))
