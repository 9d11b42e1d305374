from django.urls import path, re_path

from imaging import views

app_name = "imaging"
urlpatterns = [
    path("studies/<int:study_id>/viewer/", views.study_viewer, name="viewer"),
    path("studies/<int:study_id>/open/", views.study_open, name="open"),
    path("studies/<int:study_id>/close/", views.study_close, name="close"),
    # OHIF (docs/viewer.md): its page, ReadRoom's app-config.js, and its files at a versioned path
    path("ohif/app-config.js", views.ohif_app_config, name="ohif-config"),
    re_path(r"^ohif/viewer(?:/(?P<route>[\w-]+))?$", views.ohif_viewer, name="ohif-viewer"),
    re_path(r"^ohif/(?P<version>\d+\.\d+\.\d+)/(?P<path>[\w./-]+)$", views.ohif_asset, name="ohif-asset"),
]
