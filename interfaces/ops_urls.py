from django.urls import path

from interfaces import views

app_name = "interfaces"
urlpatterns = [
    path("interfaces/", views.interface_health_page, name="health"),
]
