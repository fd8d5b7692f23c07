"""GET /api/analytics/mlflow/gaps: the latest template-gap mining (clusters of messages the catalog does not serve
well), and POST .../gaps/mine to run one now. The mining is the intent app's (`intent.gaps`): read by dotted path
and started by task name, as analytics imports none of intent's modules."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.utils.module_loading import import_string
from drf_spectacular.utils import OpenApiExample
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from intentsite.exceptions import Unavailable
from intentsite.serializers import QueryIntegerField, StrictIntegerField, StrictSerializer, api_schema

GAP_REPORT = "intent.gaps.selectors.gap_report_get"  # override with ANALYTICS_GAP_REPORT
GAPS_MINE_TASK = "intent.tasks.gaps_mine_task"
# Who may read messages: permissions of the intent app, named (not imported).
MESSAGE_PERMISSIONS = ("intent.view_detectiondetail", "intent.label_detections")


class DayCountSerializer(serializers.Serializer):
    day = serializers.DateField()
    count = serializers.IntegerField()


class IntentCountSerializer(serializers.Serializer):
    intent = serializers.CharField()
    count = serializers.IntegerField()


class GapClusterSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    rank = serializers.IntegerField(help_text="1 = the largest.")
    size = serializers.IntegerField()
    share = serializers.FloatField(help_text="Of the period's candidate messages.")
    suggested_name = serializers.CharField()
    top_terms = serializers.ListField(child=serializers.CharField())
    examples = serializers.ListField(child=serializers.CharField(), help_text="Up to 5, redacted, the most central.")
    trend = DayCountSerializer(many=True)
    detected_intents = IntentCountSerializer(many=True, help_text="What the detector answered for them.")
    adopted_as = serializers.CharField(allow_null=True, help_text="The intent made from it (admin action), if any.")


class GapMiningSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    computed_at = serializers.DateTimeField()
    days = serializers.IntegerField()
    detections = serializers.IntegerField(help_text="Detections of the period with a stored message.")
    candidates = serializers.IntegerField(help_text="Those out of scope, without a template, or under "
                                                    "GAPS_LOW_CONFIDENCE.")
    clustered = serializers.IntegerField(help_text="Candidates the clusterer saw (a sample past GAPS_SAMPLE_SIZE).")
    seconds = serializers.FloatField()


class GapReportSerializer(serializers.Serializer):
    available = serializers.BooleanField(help_text="False when messages are not stored (INTENT_STORE_MESSAGES=0).")
    reason = serializers.CharField(allow_blank=True)
    mining = GapMiningSerializer(allow_null=True, help_text="Null until a mining of this period ran.")
    clusters = GapClusterSerializer(many=True)


class MayReadMessages(BasePermission):
    """Clusters hold users' messages (redacted): staff who may read detections' messages (the permission
    `intent.view_detectiondetail`, or the reviewers' `intent.label_detections`)."""

    message = "Reading messages needs intent.view_detectiondetail (or intent.label_detections)."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_staff and any(user.has_perm(perm) for perm in MESSAGE_PERMISSIONS))


class GapsApi(APIView):
    """The latest mining of the period (beat mines GAPS_DAYS days nightly; POST .../gaps/mine for another now)."""

    permission_classes = [IsAdminUser, MayReadMessages]
    throttle_scope = "analytics"

    class FilterSerializer(StrictSerializer):
        class Meta:
            ref_name = "GapsFilter"

        days = QueryIntegerField(min_value=1, max_value=90, default=30, help_text="The mined period, in days (1–90).")

    @api_schema(operation_id="analytics_gaps", summary="Template gaps: clusters of messages the catalog misses",
                parameters=[FilterSerializer], responses={200: GapReportSerializer},
                errors=(400, 401, (403, "Not staff, or not allowed to read messages (intent.view_detectiondetail)."),
                        429))
    def get(self, request):
        serializer = self.FilterSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        read = import_string(getattr(settings, "ANALYTICS_GAP_REPORT", GAP_REPORT))
        return Response(GapReportSerializer(read(days=serializer.validated_data["days"])).data)


class GapsMineApi(APIView):
    permission_classes = [IsAdminUser]
    throttle_scope = "analytics"

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "GapsMineInput"

        days = StrictIntegerField(min_value=1, max_value=90, required=False, default=30,
                                  help_text="The period to mine, in days (1–90).")

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "GapsMineQueued"

        queued = serializers.BooleanField(help_text=(
            "False when a mining of this period was asked for less than GAPS_MINE_DEBOUNCE_S ago: that one comes."))
        days = serializers.IntegerField()

    @api_schema(operation_id="analytics_gaps_mine", summary="Mine template gaps now (a worker does it)",
                request=InputSerializer, responses={202: OutputSerializer},
                errors=(400, 401, 403, 413, 415, 429, (503, "The broker cannot be reached: try again later.")),
                examples=[OpenApiExample("Request", value={"days": 30}, request_only=True)])
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        days = serializer.validated_data["days"]
        # One mining of a period at a time: a mining takes seconds of a worker (bench/gaps.py), and a loop of
        # requests must not queue hundreds.
        key = f"analytics:gaps-mine:{days}"
        queued = cache.add(key, 1, timeout=settings.GAPS_MINE_DEBOUNCE_S)
        if queued:
            try:
                current_app.send_task(GAPS_MINE_TASK, kwargs={"days": days})
            except Exception as exc:  # noqa: BLE001 - the broker away: say so, nothing was queued
                cache.delete(key)
                raise Unavailable(f"Could not queue the mining: {type(exc).__name__}") from exc
        body: dict[str, Any] = {"queued": queued, "days": days}
        return Response(self.OutputSerializer(body).data, status=status.HTTP_202_ACCEPTED)
