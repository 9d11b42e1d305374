from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import views as account_views

admin.site.site_header = "ReadRoom administration"
admin.site.site_title = "ReadRoom admin"
admin.site.login = account_views.admin_login_redirect  # one login page, with lockout and 2FA
admin.site.admin_view = account_views.admin_staff_only(admin.site.admin_view)  # non-staff: 403

api_v1 = [
    path("", include("facilities.api")),
    path("", include("credentialing.api")),
    path("", include("worklist.api")),
    path("", include("qa.api")),
    path("", include("worklist.assignment_api")),
    path("", include("worklist.order_match_api")),
    path("", include("reports.api")),
    path("", include("imaging.api")),
]

urlpatterns = [
    path("", include("accounts.urls")),
    path("facilities/", include("facilities.urls")),
    path("credentialing/", include("credentialing.urls")),
    path("qa/", include("qa.urls")),
    path("dicomweb/", include("interfaces.urls")),
    path("fhir/r4/", include("interfaces.fhir.urls")),
    path("fhircast/", include("interfaces.fhircast.urls")),
    path("operations/", include("interfaces.ops_urls")),
    path("operations/", include("worklist.coverage_urls")),
    path("", include("imaging.urls")),
    path("", include("reports.urls")),
    path("", include("worklist.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api/swagger_ui.html"),
        name="api-docs",
    ),
]
