"""Routes under /api/analytics/: custom boards."""

from django.urls import path

from . import apis

app_name = "boards"

urlpatterns = [
    path("boards/", apis.BoardListApi.as_view(), name="boards"),
    path("boards/<str:pk>/", apis.BoardDetailApi.as_view(), name="board"),
    path("boards/<str:pk>/data", apis.BoardDataApi.as_view(), name="board-data"),
    path("boards/<str:pk>/export", apis.BoardExportApi.as_view(), name="board-export"),
]
