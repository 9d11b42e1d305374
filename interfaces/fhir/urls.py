"""``/fhir/r4/`` (DESIGN.md §5): ImagingStudy from imaging's records, DiagnosticReport from reports'
(its view lives with the reports app, which knows what a signed report is)."""

from django.urls import path

from interfaces.fhir import views
from reports.fhir import DiagnosticReportView

app_name = "fhir"
urlpatterns = [
    path("ImagingStudy/<int:study_id>", views.ImagingStudyView.as_view(), name="imaging-study"),
    path("DiagnosticReport/<int:report_id>", DiagnosticReportView.as_view(), name="diagnostic-report"),
]
