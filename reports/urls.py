"""Reports' pages: the report editor and signed report of a study, the PDF, monthly charges, and the
facility admins' templates and macros (under ``/reports/``)."""

from django.urls import path

from reports import template_views, views

app_name = "reports"
urlpatterns = [
    path("studies/<int:study_id>/report/", views.report_page, name="report"),
    path("studies/<int:study_id>/report/priors/", views.report_prior_status, name="prior_status"),
    path("studies/<int:study_id>/report/autosave/", views.report_autosave, name="autosave"),
    path("studies/<int:study_id>/report/sign/", views.report_sign_view, name="sign"),
    path("studies/<int:study_id>/report/critical/", views.report_critical_view, name="critical"),
    path("studies/<int:study_id>/report/addenda/", views.report_addendum_view, name="addenda"),
    path("studies/<int:study_id>/report.pdf", views.report_pdf_view, name="pdf"),
    path("reports/charges/<str:facility_code>/<str:month>.csv", views.charges_csv, name="charges_csv"),
    path("reports/templates/", template_views.template_list, name="template_list"),
    path("reports/templates/new/", template_views.template_new, name="template_new"),
    path("reports/templates/import/", template_views.template_import, name="template_import"),
    path("reports/templates/preview/", template_views.content_preview, name="content_preview"),
    path("reports/templates/<int:template_id>/", template_views.template_detail, name="template_detail"),
    path("reports/templates/<int:template_id>/edit/", template_views.template_edit, name="template_edit"),
    path(
        "reports/templates/<int:template_id>/fields/",
        template_views.template_fields_edit,
        name="template_fields",
    ),
    path("reports/templates/<int:template_id>/diff/", template_views.template_diff, name="template_diff"),
    path(
        "reports/templates/<int:template_id>/copy/", template_views.template_copy_view, name="template_copy"
    ),
    path("reports/templates/<int:template_id>/import/", template_views.version_import, name="version_import"),
    path(
        "reports/templates/<int:template_id>/v<int:number>/",
        template_views.version_detail,
        name="version_detail",
    ),
    path(
        "reports/templates/<int:template_id>/v<int:number>/mrrt/",
        template_views.version_export,
        name="version_export",
    ),
    path("reports/macros/<str:code>/", template_views.macro_list, name="macro_list"),
    path("reports/macros/edit/<int:macro_id>/", template_views.macro_edit, name="macro_edit"),
    path("reports/macros/delete/<int:macro_id>/", template_views.macro_remove, name="macro_delete"),
]
