from django.urls import path

from reports import template_views as views

app_name = "reports"
urlpatterns = [
    path("templates/", views.template_list, name="template_list"),
    path("templates/new/", views.template_new, name="template_new"),
    path("templates/import/", views.template_import, name="template_import"),
    path("templates/preview/", views.content_preview, name="content_preview"),
    path("templates/<int:template_id>/", views.template_detail, name="template_detail"),
    path("templates/<int:template_id>/edit/", views.template_edit, name="template_edit"),
    path("templates/<int:template_id>/fields/", views.template_fields_edit, name="template_fields"),
    path("templates/<int:template_id>/diff/", views.template_diff, name="template_diff"),
    path("templates/<int:template_id>/copy/", views.template_copy_view, name="template_copy"),
    path("templates/<int:template_id>/import/", views.version_import, name="version_import"),
    path("templates/<int:template_id>/v<int:number>/", views.version_detail, name="version_detail"),
    path("templates/<int:template_id>/v<int:number>/mrrt/", views.version_export, name="version_export"),
    path("macros/<str:code>/", views.macro_list, name="macro_list"),
    path("macros/edit/<int:macro_id>/", views.macro_edit, name="macro_edit"),
    path("macros/delete/<int:macro_id>/", views.macro_remove, name="macro_delete"),
]
