from django.urls import path

from qa import views

app_name = "qa"

urlpatterns = [
    path("reviews/", views.review_list, name="reviews"),
    path("reviews/<int:review_id>/", views.review_detail, name="review"),
    path("reviews/<int:review_id>/impression/", views.review_impression, name="review_impression"),
    path("reviews/<int:review_id>/score/", views.review_score, name="review_score"),
    path("feedback/<int:adjudication_id>/", views.feedback_detail, name="feedback"),
    path("adjudication/", views.adjudication_list, name="adjudication"),
    path("adjudication/<int:review_id>/", views.adjudication_detail, name="adjudication_detail"),
    path("adjudication/unassignable/<int:review_id>/assign/", views.review_assign, name="review_assign"),
    path("refer/<int:report_id>/", views.refer, name="refer"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("quarterly/", views.quarterly_list, name="quarterly"),
    path(
        "quarterly/<str:facility_code>/<int:year>-Q<int:quarter>.<str:kind>",
        views.quarterly_download,
        name="quarterly_download",
    ),
]
