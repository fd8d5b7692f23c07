"""Custom boards over HTTP: staff see their own boards and those shared with them; the owner (or
`analytics.change_board`) changes one; each widget's data and exports of a board or a widget."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.generics import get_object_or_404
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from intentsite.serializers import api_schema

from ..monitors.apis import KnownQueryParameters, Pagination
from .serializers import BoardSerializer, ExportSerializer, board_editable
from .services import board_data, board_export, boards_triples_request, boards_visible

READ_ERRORS = (400, 401, 403, 429)
WRITE_ERRORS = (400, 401, 403, (409, "A group that does not exist or is not one of yours."), 413, 415, 429)


class StaffOnly(BasePermission):
    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class BoardBaseApi(KnownQueryParameters):
    permission_classes = [StaffOnly]
    throttle_scope = "analytics"

    def get_queryset(self):
        return boards_visible(user=self.request.user).order_by("name", "id")

    def board(self, pk: str):
        return get_object_or_404(self.get_queryset(), pk=pk)


@extend_schema_view(
    get=api_schema(responses={200: BoardSerializer(many=True)}, errors=READ_ERRORS, summary="Boards you can see"),
    post=api_schema(responses={201: BoardSerializer}, errors=WRITE_ERRORS, summary="Create a board (yours)"),
)
class BoardListApi(BoardBaseApi, generics.ListCreateAPIView):
    """Your boards, those shared with all staff, and those shared with one of your groups."""

    known_query_parameters = ("limit", "offset")
    serializer_class = BoardSerializer
    pagination_class = Pagination

    def perform_create(self, serializer) -> None:
        serializer.save(owner=self.request.user)
        boards_triples_request()


@extend_schema_view(
    get=api_schema(responses={200: BoardSerializer}, errors=(*READ_ERRORS, 404), summary="A board"),
    patch=api_schema(responses={200: BoardSerializer}, errors=(*WRITE_ERRORS, 404), summary="Change a board"),
    put=api_schema(responses={200: BoardSerializer}, errors=(*WRITE_ERRORS, 404), summary="Replace a board"),
    delete=api_schema(responses={204: None}, errors=(*READ_ERRORS, 404), summary="Delete a board"),
)
class BoardDetailApi(BoardBaseApi, generics.RetrieveUpdateDestroyAPIView):
    """One board; its owner (or `analytics.change_board`) changes or deletes it."""

    serializer_class = BoardSerializer

    def check_object_permissions(self, request, obj) -> None:
        super().check_object_permissions(request, obj)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not board_editable(board=obj, user=request.user):
            raise PermissionDenied("Only its owner, or a user with analytics.change_board, changes this board.")

    def perform_update(self, serializer) -> None:
        super().perform_update(serializer)
        boards_triples_request()

    def perform_destroy(self, instance) -> None:
        super().perform_destroy(instance)
        boards_triples_request()


class WidgetDataSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    widget = serializers.DictField()
    data = serializers.DictField(help_text=(
        "period, filters, metric, breakdown, path (`rollups` or `raw rows`), total {value, runs}, rows [{key, value, "
        "runs}]"))


class BoardDataApi(BoardBaseApi, APIView):
    """Every widget's answer (cached until the next sync finishes)."""

    @api_schema(responses={200: WidgetDataSerializer(many=True)}, errors=(*READ_ERRORS, 404),
                summary="A board's widgets with their data")
    def get(self, request, pk: str):
        return Response(WidgetDataSerializer(board_data(board=self.board(pk)), many=True).data)


class BoardExportApi(BoardBaseApi, APIView):
    """The board's widgets, or one, as a file: one row per widget and key (CSV or Parquet)."""

    known_query_parameters = ("format", "widget")

    def perform_content_negotiation(self, request, force=False):
        # `?format=` is ours (csv, parquet; the serializer's 400 names them), not DRF's renderer override.
        return super().perform_content_negotiation(request, force=True)

    @api_schema(
        responses={(200, "text/csv"): OpenApiResponse(str, description="CSV"),
                   (200, "application/vnd.apache.parquet"): OpenApiResponse(bytes, description="Parquet")},
        errors=(*READ_ERRORS, 404), parameters=[ExportSerializer], summary="Export a board or a widget")
    def get(self, request, pk: str):
        board = self.board(pk)
        query = ExportSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        fmt = query.validated_data.get("format", "csv")
        widget = query.validated_data.get("widget")
        if widget is not None and widget >= len(board.widgets):
            raise NotFound(f"No widget {widget}: the board has {len(board.widgets)}.")
        content = board_export(board=board, fmt=fmt, widget=widget)
        answer = HttpResponse(content, content_type="text/csv; charset=utf-8" if fmt == "csv"
                              else "application/vnd.apache.parquet")
        answer["Content-Disposition"] = f'attachment; filename="board-{board.pk}.{fmt}"'
        return answer

