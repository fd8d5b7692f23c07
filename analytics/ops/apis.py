"""Operations endpoints: the pipeline's health (staff), experiment maintenance (superusers), Prometheus metrics."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, PolymorphicProxySerializer
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from intentsite.serializers import StrictBooleanField, StrictSerializer, api_schema

from ..mirror.experiments import experiments_recreate
from .health import STATUS_DOWN, health_get
from .metrics import metrics_text


class IsSuperuser(BasePermission):
    message = "Only superusers may do this."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_superuser)


HEALTH_EXAMPLE = {
    "status": "degraded", "reasons": ["sync_lagging"], "checked_at": "2026-11-26T13:05:00.120000+00:00",
    "tracking_uri": "http://mlflow.internal:5000", "experiment_name": "intent_detection",
    "mlflow": {"reachable": True, "experiment_present": True, "error": None},
    "sync": {"last_succeeded_at": "2026-11-26T12:58:41.004000+00:00", "lag_s": 379.1, "interval_s": 60.0,
             "max_lag_s": 180.0, "last_error": None, "mirrored_runs": 1045210,
             "newest_run_at": "2026-11-26T12:58:40.512000+00:00", "newest_run_age_s": 379.6},
    "dead_letters": 0, "broker": {"reachable": True, "error": None}, "database": {"reachable": True, "error": None},
    "lm_circuits": [{"lm": "openai/gpt-4o-mini", "api_base": None, "state": "closed", "consecutive_failures": 0,
                     "failure_rate": 0.05, "calls_in_window": 20, "opened_at": None, "open_until": None, "probes": 1,
                     "times_opened": 1}],
    "workers": {"alive": [{"hostname": "celery@worker-1", "queues": ["celery", "periodic"], "seen_s_ago": 4.2}],
                "last_seen_at": "2026-11-26T13:04:55.900000+00:00", "stale_after_s": 30.0},
    "tracking_backlog": {"pending": 12, "oldest_pending_at": "2026-11-26T13:04:58.000000+00:00",
                         "oldest_pending_age_s": 2.1, "max_age_s": 300.0},
}


class MlflowHealthSerializer(serializers.Serializer):
    reachable = serializers.BooleanField()
    experiment_present = serializers.BooleanField(help_text="The detection experiment exists and is not deleted.")
    error = serializers.CharField(allow_null=True)


class SyncHealthSerializer(serializers.Serializer):
    last_succeeded_at = serializers.DateTimeField(allow_null=True)
    lag_s = serializers.FloatField(allow_null=True, help_text="Seconds since the last successful sync.")
    interval_s = serializers.FloatField(help_text="ANALYTICS_SYNC_INTERVAL_S.")
    max_lag_s = serializers.FloatField(help_text="Past this lag (3 intervals) the status is degraded.")
    last_error = serializers.CharField(allow_null=True)
    mirrored_runs = serializers.IntegerField()
    newest_run_at = serializers.DateTimeField(allow_null=True)
    newest_run_age_s = serializers.FloatField(allow_null=True)


class ReachableSerializer(serializers.Serializer):
    reachable = serializers.BooleanField()
    error = serializers.CharField(allow_null=True)


class LMCircuitSerializer(serializers.Serializer):
    lm = serializers.CharField(help_text="INTENT_LM.")
    api_base = serializers.CharField(allow_null=True, help_text="INTENT_LM_API_BASE without credentials.")
    state = serializers.ChoiceField(choices=["closed", "open", "half_open"], help_text=(
        "open: detections skip the LM and the local backend answers (error_category lm_circuit_open) until "
        "open_until; half_open: one probe call is trying the LM, its outcome closes or re-opens the breaker."))
    consecutive_failures = serializers.IntegerField()
    failure_rate = serializers.FloatField(help_text="Share of failed LM calls among the last calls_in_window.")
    calls_in_window = serializers.IntegerField()
    opened_at = serializers.DateTimeField(allow_null=True, help_text="When it last opened; null while closed.")
    open_until = serializers.DateTimeField(allow_null=True, help_text="When a probe may try the LM again.")
    probes = serializers.IntegerField(help_text="Probe calls let through since the process started.")
    times_opened = serializers.IntegerField()


class WorkerSerializer(serializers.Serializer):
    hostname = serializers.CharField()
    queues = serializers.ListField(child=serializers.CharField(), help_text="The queues it consumes.")
    seen_s_ago = serializers.FloatField(help_text="Seconds since its last heartbeat.")


class WorkersHealthSerializer(serializers.Serializer):
    alive = WorkerSerializer(many=True, help_text="Celery workers whose heartbeat is younger than stale_after_s.")
    last_seen_at = serializers.DateTimeField(allow_null=True, help_text="The last heartbeat of any worker.")
    stale_after_s = serializers.FloatField(help_text="3 × WORKER_HEARTBEAT_S.")


class BacklogHealthSerializer(serializers.Serializer):
    pending = serializers.IntegerField(help_text="Detections written but not yet logged to MLflow.")
    oldest_pending_at = serializers.DateTimeField(allow_null=True)
    oldest_pending_age_s = serializers.FloatField(allow_null=True)
    max_age_s = serializers.FloatField(help_text="HEALTH_BACKLOG_MAX_AGE_S: older than this is degraded.")


class MonitorsHealthSerializer(serializers.Serializer):
    states = serializers.DictField(child=serializers.IntegerField(), help_text="Monitors per state.")
    alerting = serializers.ListField(child=serializers.CharField(), help_text="Monitors in alert (health degraded).")


# Strict: its schema has no room for more, so that a full `down` answer matches the other one alone (oneOf).
class DatabaseDownSerializer(StrictSerializer):
    """The health answer when the database is gone before the caller could be authenticated: no more is said."""

    class Meta:
        ref_name = "AnalyticsHealthDatabaseDown"

    status = serializers.ChoiceField(choices=["down"])
    reasons = serializers.ListField(child=serializers.ChoiceField(choices=["database_unreachable"]))
    database = ReachableSerializer()


class HealthApi(APIView):
    permission_classes = [IsAdminUser]
    throttle_scope = "analytics"

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "AnalyticsHealth"

        status = serializers.ChoiceField(choices=["ok", "degraded", "down"])
        reasons = serializers.ListField(child=serializers.CharField(), help_text=(
            "Why not ok: mlflow_unreachable, database_unreachable (down); experiment_missing, "
            "sync_never_succeeded, sync_lagging, dead_letters, broker_unreachable, lm_circuit_open, no_worker_alive, "
            "tracking_backlog, monitor_alert (degraded)."))
        checked_at = serializers.DateTimeField()
        tracking_uri = serializers.CharField(help_text="MLFLOW_TRACKING_URI without credentials.")
        experiment_name = serializers.CharField()
        mlflow = MlflowHealthSerializer()
        sync = SyncHealthSerializer()
        dead_letters = serializers.IntegerField(allow_null=True, help_text="Detections waiting in the dead letters.")
        broker = ReachableSerializer()
        database = ReachableSerializer()
        lm_circuits = LMCircuitSerializer(many=True, allow_null=True, help_text=(
            "The circuit breaker of each LM configured so far, in the process that answered this request: each web "
            "process has its own breakers, so another process may be in another state."))
        workers = WorkersHealthSerializer(allow_null=True, help_text="Null when the database cannot be read.")
        tracking_backlog = BacklogHealthSerializer(allow_null=True, help_text="Null when it cannot be read.")
        monitors = MonitorsHealthSerializer(allow_null=True, help_text="Null when it cannot be read.")

    @api_schema(
        operation_id="analytics_health",
        summary="Health of MLflow, the mirror's sync, workers, the tracking backlog, broker and database (staff)",
        responses={200: OutputSerializer, 503: OpenApiResponse(PolymorphicProxySerializer(
            component_name="AnalyticsHealthDown", serializers=[OutputSerializer, DatabaseDownSerializer],
            resource_type_field_name=None), description="status down (the database gone: before authentication)")},
        errors=(401, 403, 429),
        examples=[OpenApiExample("Degraded: the sync is late", value=HEALTH_EXAMPLE, response_only=True)],
    )
    def get(self, request):
        health = health_get()
        code = status.HTTP_503_SERVICE_UNAVAILABLE if health["status"] == STATUS_DOWN else status.HTTP_200_OK
        return Response(self.OutputSerializer(health).data, status=code)

    def handle_exception(self, exc):
        # The database is needed to authenticate: when it is gone, say so instead of a 500.
        if isinstance(exc, DatabaseError):
            down = {"status": STATUS_DOWN, "reasons": ["database_unreachable"],
                    "database": {"reachable": False, "error": type(exc).__name__}}
            return Response(DatabaseDownSerializer(down).data, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return super().handle_exception(exc)


class ExperimentsRecreateApi(APIView):
    permission_classes = [IsSuperuser]
    throttle_scope = "analytics"

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "ExperimentsRecreateInput"

        reset = StrictBooleanField(required=False, default=False, help_text=(
            "Put each existing experiment aside (renamed, deleted with its runs) and create it anew."))

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ExperimentsRecreateResult"

        created = serializers.ListField(child=serializers.CharField())
        restored = serializers.ListField(child=serializers.CharField())
        reset = serializers.ListField(child=serializers.CharField())
        unchanged = serializers.ListField(child=serializers.CharField())
        orphaned_runs = serializers.IntegerField(help_text="Runs left in the experiments a reset put aside.")
        archived_as = serializers.DictField(child=serializers.CharField(),
                                            help_text="Reset only: the name each old experiment now has.")
        experiment_ids = serializers.DictField(child=serializers.CharField())
        mirrored_runs_dropped = serializers.IntegerField(help_text="Rows of the analytics mirror a reset dropped.")

    @api_schema(
        operation_id="analytics_experiments_recreate",
        summary="Create missing MLflow experiments, restore deleted ones, or reset them (superusers)",
        request=InputSerializer,
        responses={200: OutputSerializer},
        errors=(400, 401, (403, "Not a superuser (or a session request without its CSRF token)."), 413, 415, 429, 502,
                503),
        examples=[
            OpenApiExample("Reset", value={"reset": True}, request_only=True),
            OpenApiExample("Reset result", response_only=True, value={
                "created": ["intent_evaluation", "intent_optimization"], "restored": [],
                "reset": ["intent_detection", "intent_prompt_versions"], "unchanged": [], "orphaned_runs": 1532,
                "archived_as": {"intent_detection": "intent_detection.reset-20261126T130501Z-1",
                                "intent_prompt_versions": "intent_prompt_versions.reset-20261126T130501Z-2"},
                "experiment_ids": {"intent_detection": "5", "intent_prompt_versions": "6", "intent_evaluation": "3",
                                   "intent_optimization": "4"},
                "mirrored_runs_dropped": 1530}),
        ],
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # MLflow unreachable or refusing: domain errors (503, 502) the exception handler answers.
        result = experiments_recreate(**serializer.validated_data)
        return Response(self.OutputSerializer(result).data)


@csrf_exempt
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics for Prometheus: off (404) unless METRICS_TOKEN is set; then the scraper sends it as a bearer
    token (`authorization: {credentials: ...}` in a scrape config). Not part of the OpenAPI schema: a plain text
    exposition, not a JSON API."""
    token = settings.METRICS_TOKEN
    if not token:
        return JsonResponse({"detail": "Metrics are off: set METRICS_TOKEN to serve them."}, status=404)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        response = JsonResponse({"detail": "Send the metrics token: `Authorization: Bearer <METRICS_TOKEN>`."},
                                status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        body = metrics_text()
    except DatabaseError:
        return JsonResponse({"detail": "The database is unreachable: no metrics to read."}, status=503,
                            headers={"Retry-After": "10"})
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
