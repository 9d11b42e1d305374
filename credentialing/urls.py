from django.urls import path

from credentialing import views

app_name = "credentialing"
urlpatterns = [
    path("", views.workspace, name="workspace"),
    path("me/", views.my_profile, name="my_profile"),
    path("applications/", views.applications, name="applications"),
    path("expiring/", views.expiring, name="expiring"),
    path("forecast/", views.forecast, name="forecast"),
    path("notifications/", views.notifications, name="notifications"),
    path("readers/", views.readers, name="readers"),
    path("profiles/new/", views.profile_new, name="profile_new"),
    path("profiles/<int:profile_id>/", views.profile_detail, name="profile"),
    path("profiles/<int:profile_id>/edit/", views.profile_edit, name="profile_edit"),
    path("profiles/<int:profile_id>/documents/", views.document_upload, name="document_upload"),
    path("profiles/<int:profile_id>/privileges/new/", views.privilege_new, name="privilege_new"),
    path("profiles/<int:profile_id>/packet/<str:code>.pdf", views.packet, name="packet"),
    path("profiles/<int:profile_id>/<slug:kind>/new/", views.record_edit, name="record_new"),
    path("profiles/<int:profile_id>/<slug:kind>/<int:pk>/", views.record_edit, name="record_edit"),
    path("profiles/<int:profile_id>/<slug:kind>/<int:pk>/verify/", views.record_verify, name="record_verify"),
    path("documents/<int:document_id>/", views.document_download, name="document_download"),
    path("privileges/<int:privilege_id>/", views.privilege_detail, name="privilege"),
    path("privileges/<int:privilege_id>/checklist/", views.checklist_add, name="checklist_add"),
    path("privileges/<int:privilege_id>/<slug:action>/", views.privilege_action, name="privilege_action"),
    path("checklist/<int:item_id>/", views.checklist_toggle, name="checklist_toggle"),
    path("facilities/<str:code>/", views.facility_settings, name="facility_settings"),
]
