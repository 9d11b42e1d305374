from django.urls import path

from worklist import coverage_views, rota_calendar_views, rota_views

app_name = "coverage"
urlpatterns = [
    path("on-now/", coverage_views.on_now_page, name="on_now"),
    path("coverage/", coverage_views.coverage_grid_page, name="grid"),
    path("rota/", rota_views.rota_page, name="rota"),
    path("rota/calendar/", rota_calendar_views.calendar_page, name="calendar"),
    path("rota/calendar/month/", rota_calendar_views.month_page, name="calendar_month"),
    path("rota/calendar/shifts/new/", rota_calendar_views.shift_create, name="shift_create"),
    path("rota/calendar/shifts/<int:shift_id>/", rota_calendar_views.shift_edit, name="shift_edit"),
    path("rota/templates/new/", rota_views.template_create, name="template_create"),
    path("rota/templates/<int:template_id>/", rota_views.template_edit, name="template_edit"),
    path(
        "rota/templates/<int:template_id>/deactivate/",
        rota_views.template_deactivate,
        name="template_deactivate",
    ),
    path("rota/time-off/new/", rota_views.time_off_create, name="time_off_create"),
    path("rota/time-off/<int:time_off_id>/withdraw/", rota_views.time_off_withdraw, name="time_off_withdraw"),
]
