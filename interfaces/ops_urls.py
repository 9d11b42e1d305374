from django.urls import path

from interfaces import views

app_name = "interfaces"
urlpatterns = [
    path("interfaces/", views.interface_health_page, name="health"),
    path("interfaces/outbound/<int:message_id>/requeue/", views.outbound_requeue, name="outbound_requeue"),
]
