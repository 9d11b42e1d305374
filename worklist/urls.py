from django.urls import path

from worklist import live_views, views

app_name = "worklist"
urlpatterns = [
    path("worklist/", views.reader_worklist, name="reader"),
    path("worklist/rows/", views.reader_rows, name="rows"),
    path("operations/worklist/", views.operations_worklist, name="operations"),
    path("operations/worklist/<int:study_id>/reassign/", views.reassign_page, name="reassign"),
    path("operations/worklist/<int:study_id>/match/", views.order_match, name="order_match"),
    path("operations/worklist/<int:study_id>/unmatch/", views.order_unmatch, name="order_unmatch"),
    path("operations/worklist/rows/", views.operations_rows, name="operations_rows"),
    path("live/pending/", live_views.live_pending, name="live_pending"),
    path("live/lock/", live_views.live_lock, name="live_lock"),
    path("live/active/", live_views.live_active, name="live_active"),
    path("live/unlock/", live_views.live_unlock, name="live_unlock"),
    path("live/acknowledge/", live_views.live_acknowledge, name="live_acknowledge"),
]
