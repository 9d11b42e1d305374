"""DICOMweb (PS3.18) routes, included at ``/dicomweb/`` by radiology/urls.py. Paths have no trailing
slash, as the standard writes them; the UIDs are path segments."""

from django.urls import path

from interfaces.dicom import web

app_name = "dicomweb"

_study = "studies/<str:study>"
_series = f"{_study}/series/<str:series>"
_instance = f"{_series}/instances/<str:instance>"

urlpatterns = [
    path("", web.RootView.as_view(), name="root"),
    path("studies", web.StudiesView.as_view(), name="studies"),
    path("series", web.AllSeriesView.as_view(), name="all-series"),
    path("instances", web.AllInstancesView.as_view(), name="all-instances"),
    path(_study, web.StudyView.as_view(), name="study"),
    path(f"{_study}/metadata", web.StudyMetadataView.as_view(), name="study-metadata"),
    path(f"{_study}/rendered", web.StudyRenderedView.as_view(), name="study-rendered"),
    path(f"{_study}/thumbnail", web.StudyThumbnailView.as_view(), name="study-thumbnail"),
    path(f"{_study}/series", web.StudySeriesView.as_view(), name="study-series"),
    path(f"{_study}/instances", web.StudyInstancesView.as_view(), name="study-instances"),
    path(_series, web.SeriesView.as_view(), name="series"),
    path(f"{_series}/metadata", web.SeriesMetadataView.as_view(), name="series-metadata"),
    path(f"{_series}/rendered", web.SeriesRenderedView.as_view(), name="series-rendered"),
    path(f"{_series}/thumbnail", web.SeriesThumbnailView.as_view(), name="series-thumbnail"),
    path(f"{_series}/instances", web.SeriesInstancesView.as_view(), name="series-instances"),
    path(_instance, web.InstanceView.as_view(), name="instance"),
    path(f"{_instance}/metadata", web.InstanceMetadataView.as_view(), name="instance-metadata"),
    path(f"{_instance}/rendered", web.InstanceRenderedView.as_view(), name="instance-rendered"),
    path(f"{_instance}/thumbnail", web.InstanceThumbnailView.as_view(), name="instance-thumbnail"),
    path(f"{_instance}/bulkdata/<path:reference>", web.BulkdataView.as_view(), name="bulkdata"),
    path(f"{_instance}/frames/<str:frames>", web.FramesView.as_view(), name="frames"),
    path(f"{_instance}/frames/<str:frames>/rendered", web.FrameRenderedView.as_view(), name="frame-rendered"),
    path(
        f"{_instance}/frames/<str:frames>/thumbnail", web.FrameThumbnailView.as_view(), name="frame-thumbnail"
    ),
]
