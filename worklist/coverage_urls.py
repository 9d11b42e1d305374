from django.urls import path

from worklist import coverage_views

app_name = "coverage"
urlpatterns = [
    path("on-now/", coverage_views.on_now_page, name="on_now"),
    path("coverage/", coverage_views.coverage_grid_page, name="grid"),
]
