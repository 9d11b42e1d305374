from rest_framework import viewsets
from rest_framework.routers import DefaultRouter

from facilities.selectors import facilities_visible_to
from facilities.serializers import FacilitySerializer


class FacilityViewSet(viewsets.ReadOnlyModelViewSet):
    """Facilities the caller may see (operations, medical director, credentialing: all;
    facility admins: their own). Look up by code: ``/api/v1/facilities/CHI-L1/``."""

    serializer_class = FacilitySerializer
    lookup_field = "code"

    def get_queryset(self):
        return facilities_visible_to(self.request.user).order_by("code")


router = DefaultRouter()
router.register("facilities", FacilityViewSet, basename="facility")
urlpatterns = router.urls
