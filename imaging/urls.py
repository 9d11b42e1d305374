from django.urls import path

from imaging import views

app_name = "imaging"
urlpatterns = [
    path("studies/<int:study_id>/viewer/", views.study_viewer, name="viewer"),
]
