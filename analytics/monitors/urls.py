"""Routes under /api/analytics/: monitors and alerts."""

from django.urls import path

from . import apis

app_name = "monitors"

urlpatterns = [
    path("monitors/", apis.MonitorListApi.as_view(), name="monitors"),
    path("monitors/<str:pk>/", apis.MonitorDetailApi.as_view(), name="monitor"),
    path("monitors/<str:pk>/preview", apis.MonitorPreviewApi.as_view(), name="monitor-preview"),
    path("alerts/", apis.AlertListApi.as_view(), name="alerts"),
]
