from django.urls import path

from interfaces import views

app_name = "interfaces"
urlpatterns = [
    path("interfaces/", views.interface_health_page, name="health"),
    path(
        "interfaces/inbound/<int:message_id>/reprocess/",
        views.inbound_decide,
        {"action": "reprocess"},
        name="inbound_reprocess",
    ),
    path(
        "interfaces/inbound/<int:message_id>/discard/",
        views.inbound_decide,
        {"action": "discard"},
        name="inbound_discard",
    ),
    path("interfaces/outbound/<int:message_id>/requeue/", views.outbound_requeue, name="outbound_requeue"),
    path("interfaces/messages/", views.message_browser, name="messages"),
    path("interfaces/messages/<str:direction>/<int:message_id>/", views.message_detail, name="message"),
    path("interfaces/dicom/", views.dicom_associations, name="dicom"),
    path("interfaces/quarantine/<int:object_id>/", views.quarantine_decide, name="quarantine_decide"),
]
