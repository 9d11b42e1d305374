from django.urls import path

from interfaces.fhircast.views import HubView

app_name = "fhircast"
urlpatterns = [path("", HubView.as_view(), name="hub")]
