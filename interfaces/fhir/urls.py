"""``/fhir/r4/`` (DESIGN.md §5): read and search of Patient, ServiceRequest and ImagingStudy from
imaging's records, DiagnosticReport from reports' (its definitions live with the reports app, which
knows what a signed report is), the CapabilityStatement, and an OperationOutcome 404 for anything else."""

from django.urls import path, re_path

from interfaces.fhir import views
from interfaces.fhir.searches import IMAGING_STUDY, PATIENT, SERVICE_REQUEST
from reports.fhir import DIAGNOSTIC_REPORT, DiagnosticReportView

SEARCHES = (PATIENT, SERVICE_REQUEST, IMAGING_STUDY, DIAGNOSTIC_REPORT)
_NAMES = {"Patient": "patient", "ServiceRequest": "service-request", "ImagingStudy": "imaging-study"}


def _search_routes(definition) -> list:
    name = _NAMES.get(definition.type, definition.type.lower())
    search = views.SearchView.as_view(definition=definition, http_method_names=["get", "head"])
    posted = views.SearchView.as_view(definition=definition)
    return [
        path(definition.type, search, name=f"{name}-search"),
        path(f"{definition.type}/", search),
        path(f"{definition.type}/_search", posted, name=f"{name}-post-search"),
    ]


app_name = "fhir"
urlpatterns = [
    path("metadata", views.CapabilityView.as_view(searches=SEARCHES), name="metadata"),
    *(route for definition in SEARCHES for route in _search_routes(definition)),
    path("Patient/<int:pk>", views.ReadView.as_view(definition=PATIENT), name="patient"),
    path(
        "ServiceRequest/<int:pk>", views.ReadView.as_view(definition=SERVICE_REQUEST), name="service-request"
    ),
    path("ImagingStudy/<int:pk>", views.ReadView.as_view(definition=IMAGING_STUDY), name="imaging-study"),
    path("DiagnosticReport/<int:report_id>", DiagnosticReportView.as_view(), name="diagnostic-report"),
    re_path(r"^(?P<rest>.*)$", views.unknown, {"served": frozenset(d.type for d in SEARCHES)}),
]
