from django.urls import path

from reports import views

app_name = "reports"
urlpatterns = [
    path("studies/<int:study_id>/report/", views.report_page, name="report"),
    path("studies/<int:study_id>/report/autosave/", views.report_autosave, name="autosave"),
    path("studies/<int:study_id>/report/sign/", views.report_sign_view, name="sign"),
    path("studies/<int:study_id>/report/critical/", views.report_critical_view, name="critical"),
    path("studies/<int:study_id>/report/addenda/", views.report_addendum_view, name="addenda"),
    path("studies/<int:study_id>/report.pdf", views.report_pdf_view, name="pdf"),
    path("reports/charges/<str:facility_code>/<str:month>.csv", views.charges_csv, name="charges_csv"),
]
