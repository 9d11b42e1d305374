"""``/fhir/r4/`` (DESIGN.md §5). ``DiagnosticReport/<id>`` is added by the reports app (its view
fetches the report through its own permission check, then answers
``fhir_response(diagnostic_report_resource(snapshot))`` from a ``FhirView``)."""

from django.urls import path

from interfaces.fhir import views

app_name = "fhir"
urlpatterns = [
    path("ImagingStudy/<int:study_id>", views.ImagingStudyView.as_view(), name="imaging-study"),
]
