from django.urls import path

from worklist import views

app_name = "worklist"
urlpatterns = [
    path("worklist/", views.reader_worklist, name="reader"),
    path("worklist/rows/", views.reader_rows, name="rows"),
    path("operations/worklist/", views.operations_worklist, name="operations"),
    path("operations/worklist/rows/", views.operations_rows, name="operations_rows"),
]
