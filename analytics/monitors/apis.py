"""Monitors and alerts over HTTP: staff read; writing a monitor needs the `analytics.change_monitor` permission."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import IntegrityError, transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.generics import get_object_or_404
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from intentsite.serializers import api_schema

from ..models import Alert, Monitor
from .preview import monitor_preview
from .serializers import (
    MAX_ID,
    AlertFilterSerializer,
    AlertSerializer,
    MonitorSerializer,
    PreviewInputSerializer,
    PreviewSerializer,
)

READ_ERRORS = (400, 401, 403, 429)  # 400: a query parameter the route does not know
WRITE_ERRORS = (400, 401, 403, (409, "The name is taken, or a channel URL no notification plugin of the service can "
                                     "load."), 413, 415, 429)


class KnownQueryParameters:
    """A query parameter the view does not know is a 400 naming it (a typo is not silently ignored)."""

    known_query_parameters: tuple[str, ...] = ()

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        unknown = sorted(set(request.query_params) - set(self.known_query_parameters))
        if unknown:
            raise ValidationError({name: ["Unknown query parameter."] for name in unknown})


class NameTaken(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "name_taken"


@contextmanager
def name_taken(noun: str = "A monitor") -> Iterator[None]:
    """Names are unique (the constraint decides, so two requests at once cannot both take one): taken is a 409."""
    try:
        with transaction.atomic():
            yield
    except IntegrityError as error:
        raise NameTaken({"name": [f"{noun} with this name exists."]}) from error


class MonitorPermission(BasePermission):
    """Staff read; changing (create, update, delete) needs analytics.change_monitor."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_staff):
            return False
        return request.method in SAFE_METHODS or getattr(view, "read_only_post", False) or user.has_perm(
            "analytics.change_monitor")


class Pagination(LimitOffsetPagination):
    """limit (1-1000, default 100) and offset (≥ 0), strictly: anything else, or a parameter given twice, is a 400
    (DRF's own falls back to the defaults silently)."""

    default_limit = 100
    max_limit = 1000

    def _value(self, request, name: str, *, minimum: int, maximum: int, default: int) -> int:
        values = request.query_params.getlist(name)
        if not values:
            return default
        if len(values) > 1 or not values[0].isdigit() or not minimum <= int(values[0]) <= maximum:
            raise ValidationError({name: [f"An integer from {minimum} to {maximum}, given once."]})
        return int(values[0])

    def get_limit(self, request) -> int:
        return self._value(request, self.limit_query_param, minimum=1, maximum=self.max_limit,
                           default=self.default_limit)

    def get_offset(self, request) -> int:
        return self._value(request, self.offset_query_param, minimum=0, maximum=MAX_ID, default=0)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: {"minimum": 1, "maximum": self.max_limit},
                  self.offset_query_param: {"minimum": 0, "maximum": MAX_ID}}
        for parameter in parameters:
            parameter["schema"] |= bounds.get(parameter["name"], {})
        return parameters


@extend_schema_view(
    get=api_schema(responses={200: MonitorSerializer(many=True)}, errors=READ_ERRORS, summary="List monitors"),
    post=api_schema(responses={201: MonitorSerializer}, errors=WRITE_ERRORS, summary="Create a monitor"),
)
class MonitorListApi(KnownQueryParameters, generics.ListCreateAPIView):
    known_query_parameters = ("limit", "offset")
    permission_classes = [MonitorPermission]
    throttle_scope = "analytics"
    serializer_class = MonitorSerializer
    pagination_class = Pagination
    queryset = Monitor.objects.order_by("name")

    def perform_create(self, serializer) -> None:
        with name_taken():
            serializer.save(created_by=self.request.user)


@extend_schema_view(
    get=api_schema(responses={200: MonitorSerializer}, errors=(*READ_ERRORS, 404), summary="A monitor"),
    patch=api_schema(responses={200: MonitorSerializer}, errors=(*WRITE_ERRORS, 404), summary="Change a monitor"),
    put=api_schema(responses={200: MonitorSerializer}, errors=(*WRITE_ERRORS, 404), summary="Replace a monitor"),
    delete=api_schema(responses={204: None}, errors=(*READ_ERRORS, 404), summary="Delete a monitor"),
)
class MonitorDetailApi(KnownQueryParameters, generics.RetrieveUpdateDestroyAPIView):
    permission_classes = [MonitorPermission]
    throttle_scope = "analytics"
    serializer_class = MonitorSerializer
    queryset = Monitor.objects.all()

    def perform_update(self, serializer) -> None:
        changes = {}
        if "channels" in serializer.validated_data and serializer.validated_data["channels"] != serializer.instance.channels:
            changes = {"channel_failures": {}, "disabled_channels": []}  # saved again: every channel gets a new chance
        with name_taken():
            serializer.save(**changes)


class MonitorPreviewApi(KnownQueryParameters, APIView):
    """When this monitor, as configured now, would have changed state over the past `days` (nothing is saved)."""

    permission_classes = [MonitorPermission]
    throttle_scope = "analytics"
    read_only_post = True

    @api_schema(request=PreviewInputSerializer, responses={200: PreviewSerializer},
                errors=(400, 401, 403, 404, 413, 415, 429), summary="Backtest a monitor")
    def post(self, request, pk: str):
        monitor = get_object_or_404(Monitor, pk=pk)  # DRF's: a pk that is no integer is a 404 too
        data = PreviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        preview = monitor_preview(monitor=monitor, days=data.validated_data["days"])
        return Response(PreviewSerializer(preview).data)


class AlertListApi(KnownQueryParameters, generics.ListAPIView):
    """Every state change of the monitors, newest first (and reminders of ongoing alerts), with how each
    notification went."""

    permission_classes = [MonitorPermission]
    throttle_scope = "analytics"
    serializer_class = AlertSerializer
    pagination_class = Pagination
    known_query_parameters = ("monitor", "state", "limit", "offset")

    @api_schema(responses={200: AlertSerializer(many=True)}, errors=READ_ERRORS, summary="Alert history",
                parameters=[OpenApiParameter("monitor", {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                                             description="Only this monitor's."),
                            OpenApiParameter("state", str, enum=list(Monitor.State.values),
                                             description="Only changes into this state.")])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        repeated = [name for name in ("monitor", "state") if len(self.request.query_params.getlist(name)) > 1]
        if repeated:
            raise ValidationError({name: ["Given more than once."] for name in repeated})
        filters = AlertFilterSerializer(data={name: value for name, value in self.request.query_params.items()
                                              if name in ("monitor", "state")})
        filters.is_valid(raise_exception=True)
        alerts = Alert.objects.select_related("monitor").order_by("-created_at", "-id")
        if "monitor" in filters.validated_data:
            alerts = alerts.filter(monitor_id=filters.validated_data["monitor"])
        if "state" in filters.validated_data:
            alerts = alerts.filter(to_state=filters.validated_data["state"])
        return alerts
