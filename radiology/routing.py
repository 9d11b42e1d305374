from django.urls import path

from interfaces.fhircast.consumers import FhircastConsumer
from worklist.consumers import WorklistConsumer

websocket_urlpatterns = [
    path("ws/worklist/", WorklistConsumer.as_asgi()),
    path("ws/fhircast/<str:endpoint>/", FhircastConsumer.as_asgi()),
]
