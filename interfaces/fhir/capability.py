"""``GET /fhir/r4/metadata``: the CapabilityStatement, written from the search definitions the views
serve (``ResourceSearch``) so that it states exactly what is supported."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from django.utils import timezone
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from interfaces.fhir.resources import validated
from interfaces.fhir.search import DEFAULT_COUNT, MAX_COUNT, ResourceSearch

FORMATS = ["application/fhir+json", "json"]

REST_DOCUMENTATION = (
    "Read and search (GET, or POST to [type]/_search with a form body) of Patient, ServiceRequest, "
    "ImagingStudy and DiagnosticReport. Searchset Bundles carry total and self/first/next/previous "
    f"links; _count pages (default {DEFAULT_COUNT}, at most {MAX_COUNT}, 0 for the total alone), newest "
    "first, and the next/previous links carry an opaque _cursor. Repeated parameters are AND, "
    "comma-separated values OR. Unknown or unsupported parameters are ignored and named in an "
    "OperationOutcome entry (search mode 'outcome'); with 'Prefer: handling=strict' they are a 400. "
    "An unsupported modifier or a malformed value is always a 400. Dates without a time zone are "
    "the facility's local time. _format=json / application/fhir+json; _pretty=true. Errors are "
    "OperationOutcome resources. A record of a facility the caller may not see is 404, as a missing one."
)
SECURITY = (
    "Every request but this one needs a ReadRoom session or an API token, 'Authorization: Token <key>' "
    "(manage.py drf_create_token USER). A facility's API token or admin sees that facility's records; a "
    "radiologist the studies they may read now (and their orders and patients); operations and the "
    "medical director every facility's. Credentialing staff are refused (403). Every read and search "
    "of patient data is written to the audit log."
)


def _software_version() -> str:
    try:
        return version("readroom")
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown"


def _resource(search: ResourceSearch) -> dict:
    chains = f" Chained: {', '.join(search.chains)}." if search.chains else ""
    return {
        "type": search.type,
        "profile": search.profile,
        "documentation": search.documentation + chains,
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": False,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": [
            {
                "name": parameter.name,
                "definition": parameter.definition or None,
                "type": parameter.kind,
                "documentation": parameter.documentation,
            }
            for parameter in search.parameters
            if "." not in parameter.name  # chains are named in the resource's documentation
        ],
    }


def capability_statement(searches: Sequence[ResourceSearch], *, base: str) -> dict:
    resource = {
        "resourceType": "CapabilityStatement",
        "id": "readroom",
        "url": f"{base}/metadata",
        "name": "ReadRoomFhirServer",
        "title": "ReadRoom FHIR R4 server",
        "status": "active",
        "experimental": False,
        "date": timezone.now().date().isoformat(),
        "publisher": "ReadRoom",
        "description": "Orders, patients, imaging studies and signed reports of a teleradiology service.",
        "kind": "instance",
        "software": {"name": "ReadRoom", "version": _software_version()},
        "implementation": {"description": "ReadRoom FHIR R4 API", "url": base},
        "fhirVersion": "4.0.1",
        "format": FORMATS,
        "rest": [
            {
                "mode": "server",
                "documentation": REST_DOCUMENTATION,
                "security": {"cors": False, "description": SECURITY},
                "resource": [_resource(search) for search in searches],
            }
        ],
    }
    return validated(CapabilityStatement, resource)
