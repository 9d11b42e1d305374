from django.urls import path

from credentialing import views

app_name = "credentialing"
urlpatterns = [
    path("me/", views.my_profile, name="my_profile"),
]
