from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views
from radiology import health

app_name = "accounts"
urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/verify/", views.verify, name="verify"),
    path("account/security/", views.security, name="security"),
    path("audit/", views.audit_log, name="audit_log"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]
