"""FHIR R4 views under ``/fhir/r4/``: thin — negotiate the format, authenticate (session or
``Authorization: Token``, as the REST API and DICOMweb), fetch through the permission-checked
selectors (the search definitions start from them), audit, answer ``application/fhir+json``.

Every error is an OperationOutcome with the HTTP status FHIR's RESTful API gives it: 400 a bad
parameter, 401 no credentials, 403 a role without patient data (credentialing staff) or a failed CSRF
check, 404 a missing record or another facility's (the same answer), 405, 406 a format other than
JSON, 415."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from django.http import Http404, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from fhir.resources.R4B.bundle import Bundle
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication, get_authorization_header
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.parsers import FormParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from accounts.audit import ReadKind, record_phi_access, record_phi_search
from accounts.authentication import AuditedTokenAuthentication, audit_actor_bind
from imaging.api import MayReadPatientData
from interfaces.fhir.capability import capability_statement
from interfaces.fhir.resources import validated
from interfaces.fhir.search import (
    FHIR_ID,
    ResourceSearch,
    SearchError,
    issue,
    operation_outcome_resource,
    page_of,
    search_request,
    searchset,
)

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
# What a client may ask for and get JSON: the FHIR type, plain JSON, the DSTU2 spelling, wildcards.
JSON_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir", "*/*", "application/*"})
JSON_FORMATS = frozenset({"json", FHIR_JSON, "application/json", "application/json+fhir"})
FHIR_VERSIONS = frozenset({"4.0", "4.0.1"})


def fhir_response(resource: dict, *, status: int = 200, pretty: bool = False) -> HttpResponse:
    body = json.dumps(resource, indent=2 if pretty else None, ensure_ascii=False)
    response = HttpResponse(body, status=status, content_type=f"{FHIR_JSON}; charset=utf-8")
    response["Cache-Control"] = "no-store, private"  # patient data
    return response


def operation_outcome(status: int, code: str, text: str, parameter: str = "") -> HttpResponse:
    severity = "error" if status < 500 else "fatal"
    return fhir_response(operation_outcome_resource([issue(severity, code, text, parameter)]), status=status)


class FhirJsonRenderer(JSONRenderer):
    media_type = FHIR_JSON
    format = "json"


class FhirNegotiation(BaseContentNegotiation):
    """``_format`` first, then Accept (FHIR R4 http.html §3.1.0.1.7): JSON in any of its spellings,
    optionally with ``fhirVersion=4.0``; anything else (XML, another FHIR version) is 406."""

    parsers = DefaultContentNegotiation()

    def select_parser(self, request, parsers):
        return self.parsers.select_parser(request, parsers)

    def select_renderer(self, request, renderers, format_suffix=None):
        wanted = request.query_params.get("_format")
        if wanted is not None:
            # "_format=application/fhir+json" unencoded arrives with a space for the "+"
            if wanted.split(";")[0].strip().replace(" ", "+") not in JSON_FORMATS:
                raise exceptions.NotAcceptable(
                    f"_format={wanted}: this server answers JSON only (_format=json)"
                )
        elif not any(_acceptable(part) for part in request.META.get("HTTP_ACCEPT", "*/*").split(",")):
            raise exceptions.NotAcceptable(
                "This server answers application/fhir+json (FHIR 4.0) only; "
                f"Accept: {request.META.get('HTTP_ACCEPT')!r} cannot be met"
            )
        return renderers[0], renderers[0].media_type


def _acceptable(part: str) -> bool:
    media_type, *parameters = (p.strip() for p in part.split(";"))
    options = dict(p.partition("=")[::2] for p in parameters)
    if media_type.lower() not in JSON_TYPES and media_type:
        return False
    if options.get("q", "1").strip() in ("0", "0.0", "0.00", "0.000"):
        return False
    return options.get("fhirVersion", "4.0").strip('"') in FHIR_VERSIONS


def prefers_strict(request) -> bool:
    """RFC 7240 Prefer, as FHIR uses it for search: ``handling=strict`` | ``handling=lenient``."""
    preferences = request.META.get("HTTP_PREFER", "").replace(";", ",").split(",")
    return any(p.strip().lower().replace(" ", "") == "handling=strict" for p in preferences)


class FhirTokenAuthentication(AuditedTokenAuthentication):
    """The API's tokens, as ``Authorization: Token <key>`` (the REST API's form) or ``Bearer <key>``,
    the form FHIR clients send (SMART backend services, EHR integration engines, ReadRoom's own FHIR
    prior-report client: docs/priors.md)."""

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return super().authenticate(request)
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: Bearer and one token.")
        try:
            key = header[1].decode()
        except UnicodeError as exc:
            raise exceptions.AuthenticationFailed("Invalid token header.") from exc
        user, token = self.authenticate_credentials(key)
        audit_actor_bind(user)
        return user, token


class FhirView(APIView):
    """Base of every FHIR view (the reports app's DiagnosticReport views derive from it)."""

    # Token first: its WWW-Authenticate challenge makes an anonymous call 401, not 403.
    authentication_classes = (FhirTokenAuthentication, SessionAuthentication)
    permission_classes = (IsAuthenticated, MayReadPatientData)
    content_negotiation_class = FhirNegotiation
    renderer_classes = (FhirJsonRenderer,)
    parser_classes = (FormParser,)
    schema = None  # FHIR resources are described by the FHIR specification, not our OpenAPI schema

    def respond(self, resource: dict, *, status: int = 200) -> HttpResponse:
        return fhir_response(
            resource, status=status, pretty=self.request.query_params.get("_pretty") == "true"
        )

    def base_url(self) -> str:
        return self.request.build_absolute_uri(reverse("fhir:metadata")).removesuffix("/metadata")

    def handle_exception(self, exc):
        if isinstance(exc, SearchError):
            return operation_outcome(400, exc.code, exc.text, exc.parameter)
        if isinstance(exc, Http404):
            return operation_outcome(404, "not-found", str(exc) or "No such resource")
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            response = operation_outcome(401, "login", str(exc.detail))
            if header := self.get_authenticate_header(self.request):
                response["WWW-Authenticate"] = header
            return response
        if isinstance(exc, exceptions.PermissionDenied):
            return operation_outcome(403, "forbidden", str(exc.detail))
        if isinstance(
            exc, exceptions.NotAcceptable | exceptions.MethodNotAllowed | exceptions.UnsupportedMediaType
        ):
            return operation_outcome(exc.status_code, "not-supported", str(exc.detail))
        if isinstance(exc, exceptions.APIException):
            return operation_outcome(
                exc.status_code, "invalid" if exc.status_code < 500 else "exception", str(exc.detail)
            )
        log.exception("FHIR %s %s failed", self.request.method, self.request.path)
        return operation_outcome(
            500, "exception", "The server could not answer; operations can find the details in the log."
        )


class ReadView(FhirView):
    """``GET [type]/<id>``: one record the caller may see (404 otherwise), its read audited."""

    http_method_names = ["get", "head", "put", "patch", "delete", "post"]  # all but GET answer 405

    definition: ResourceSearch = None  # set by as_view(definition=…)

    def get(self, request, pk: int):
        record = self.definition.visible(request.user).filter(pk=pk).first()
        if record is None:
            raise Http404(f"No {self.definition.type} {pk}")
        record_phi_access(record, kind=ReadKind.FHIR)
        return self.respond(self.definition.resource(record))


class SearchView(FhirView):
    """``GET [type]?…`` and ``POST [type]/_search`` (form body): a searchset Bundle. (A POST to
    ``[type]`` itself would be a create: 405, as ``as_view(http_method_names=…)`` says per route.)"""

    definition: ResourceSearch = None  # set by as_view(definition=…)
    http_method_names = ["get", "post", "head"]

    def get(self, request):
        return self.search(request.query_params.lists())

    def post(self, request):
        # a POSTed search may carry parameters in the URL as well as in the body (search.html §3.1.0.1)
        return self.search([*request.query_params.lists(), *request.data.lists()])

    def search(self, lists: Iterable[tuple[str, list[str]]]):
        params = [(key, value) for key, values in lists for value in values]
        search = search_request(self.definition, params, strict=prefers_strict(self.request))
        records = self.definition.visible(self.request.user).filter(search.where)
        page = page_of(records, search)
        resources = [self.definition.resource(record) for record in page.rows]
        query: dict[str, list[str]] = {}
        for key, value in search.applied:
            query.setdefault(key, []).append(value)
        record_phi_search(records.model, via="FHIR", query=query, returned=page.rows, total=page.total)
        bundle = searchset(self.definition, search, page, base=self.base_url(), resources=resources)
        validated(Bundle, {**bundle, "entry": []})  # the entries' resources are validated one by one
        return self.respond(bundle)


class CapabilityView(FhirView):
    """``GET metadata``: open to anyone, as FHIR clients (and SMART) discover a server before they
    authenticate; it names no patient data."""

    authentication_classes = ()
    permission_classes = (AllowAny,)
    searches: tuple[ResourceSearch, ...] = ()  # set by as_view(searches=…)

    def get(self, request):
        return self.respond(capability_statement(self.searches, base=self.base_url()))


@csrf_exempt  # it changes nothing; a refused CSRF check would answer Django's HTML page instead
def unknown(request, rest: str = "", served: frozenset[str] = frozenset()) -> HttpResponse:
    """Anything else under ``/fhir/r4/``: an OperationOutcome 404, not Django's HTML page. A served
    type with an id that cannot be ours (``Patient/abc``) is a resource that does not exist."""
    resource_type, _, identifier = rest.partition("/")
    if resource_type in served and FHIR_ID.fullmatch(identifier):
        return operation_outcome(404, "not-found", f"No {resource_type} {identifier}")
    return operation_outcome(
        404,
        "not-supported",
        f"{request.path} is not served here: {reverse('fhir:metadata')} lists the resource types, "
        "interactions and search parameters supported",
    )
