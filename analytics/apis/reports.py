"""The analytics reports over HTTP (contract A), staff only: validate the period and the filters, call one
selector, return its dict. The Output serializers describe the responses in the OpenAPI schema; the
selectors' dicts are JSON-ready already, so they are returned as they are (no per-field pass)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from intentsite.serializers import QueryCharField, StrictSerializer

from ..selectors.reports import (
    FILTERS,
    Scope,
    confusion_get,
    errors_get,
    model_comparison_get,
    overview_get,
    prompt_analysis_get,
    report_get,
    scope_get,
    trends_get,
)
from ..services.exports import trends_csv

FILTER_MAX_LENGTH = 200
EARLIEST_UNTIL = date(1970, 1, 1)


# --- Input ---------------------------------------------------------------------------------------------

class DaysField(serializers.IntegerField):
    """`days`: absent means the endpoint's default; present, it must be an integer 1–365 (`days=` too)."""

    def __init__(self, *, default: int) -> None:
        super().__init__(min_value=1, max_value=365, default=default,
                         help_text="Length of the period in days (1–365), ending with `until`.")

    def get_value(self, dictionary):
        # An empty string is not "absent" (DRF's default for query params): it fails as a bad integer.
        return dictionary.get(self.field_name, serializers.empty)


class ReportFilterSerializer(StrictSerializer):
    """The period (`days` up to `until`, default today UTC) and the optional filters of every report. Unknown
    parameters are a 400 that names them (a typo such as `?modul=banking` must not answer for all modules)."""

    days = DaysField(default=30)
    until = serializers.DateField(required=False, help_text=(
        "Last day of the period (UTC), from 1970-01-01 (MLflow's epoch) to tomorrow; default: today."))
    module = QueryCharField(max_length=FILTER_MAX_LENGTH, help_text="Only runs of this module.")
    user_role = QueryCharField(max_length=FILTER_MAX_LENGTH, help_text="Only runs of this user role.")
    model_name = QueryCharField(max_length=FILTER_MAX_LENGTH, help_text="Only runs of this model.")
    prompt_version = QueryCharField(max_length=FILTER_MAX_LENGTH, help_text="Only runs of this prompt version.")

    def validate_until(self, value):
        if value > timezone.now().date() + timedelta(days=1):
            raise serializers.ValidationError("Must not be in the future.")
        if value < EARLIEST_UNTIL:
            raise serializers.ValidationError(f"Must be {EARLIEST_UNTIL.isoformat()} or later (MLflow's epoch).")
        return value


class WeekFilterSerializer(ReportFilterSerializer):
    days = DaysField(default=7)


# --- Output (the schema; see the module's docstring) -----------------------------------------------------

class PeriodSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    since = serializers.DateField()
    until = serializers.DateField()


class FiltersSerializer(serializers.Serializer):
    module = serializers.CharField(required=False)
    user_role = serializers.CharField(required=False)
    model_name = serializers.CharField(required=False)
    prompt_version = serializers.CharField(required=False)


class HeaderSerializer(serializers.Serializer):
    period = PeriodSerializer()
    filters = FiltersSerializer()


def _rate(**kwargs: Any) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, min_value=0, max_value=1, **kwargs)


def _ms(**kwargs: Any) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, **kwargs)


class ResponseTimeSerializer(serializers.Serializer):
    avg = _ms()
    p50 = _ms(help_text=("Nearest-rank, from the rollups' latency sketches: within 1 % of exact and never outside "
                         "the observed minimum and maximum."))
    p95 = _ms()
    p99 = _ms()


class TokensSerializer(serializers.Serializer):
    prompt = serializers.IntegerField()
    completion = serializers.IntegerField()
    total = serializers.IntegerField()


def _share_serializer(name: str) -> type[serializers.Serializer]:
    return type(f"{name.title().replace('_', '')}ShareSerializer", (serializers.Serializer,), {
        name: serializers.CharField(), "runs": serializers.IntegerField(), "share": _rate()})


class OverviewBodySerializer(serializers.Serializer):
    total_runs = serializers.IntegerField()
    success_rate = _rate()
    error_rate = _rate()
    avg_confidence = _rate()
    response_time_ms = ResponseTimeSerializer()
    template_match_rate = _rate()
    out_of_scope_rate = _rate()
    fallback_rate = _rate()
    tokens = TokensSerializer()
    cost_usd = serializers.FloatField()
    labelled_runs = serializers.IntegerField(help_text="Runs with user feedback.")
    accuracy = _rate(help_text="Share of labelled runs whose detection was right (null: none labelled).")
    intent_distribution = _share_serializer("intent")(many=True)
    user_roles = _share_serializer("user_role")(many=True)
    modules = _share_serializer("module")(many=True)


class TrendDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    runs = serializers.IntegerField()
    success_rate = _rate()
    avg_confidence = _rate()
    p50_ms = _ms()
    p95_ms = _ms()
    out_of_scope_rate = _rate()
    error_rate = _rate()


class TrendsBodySerializer(serializers.Serializer):
    days = TrendDaySerializer(many=True)


class ErrorCategorySerializer(serializers.Serializer):
    error_category = serializers.CharField()
    count = serializers.IntegerField(help_text="Failed runs of this category.")
    fallbacks = serializers.IntegerField(help_text="Runs of this category the local backend answered instead.")
    runs = serializers.IntegerField(help_text="All runs that recorded this category.")


class ErrorTypeSerializer(serializers.Serializer):
    error_type = serializers.CharField()
    error_category = serializers.CharField()
    count = serializers.IntegerField(help_text="Failed runs of this type.")
    sample_run_id = serializers.CharField(allow_null=True, help_text="The newest failed run of this type.")


class ErrorDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    runs = serializers.IntegerField()
    errors = serializers.IntegerField()
    error_rate = _rate()


class FailingRunSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    request_id = serializers.CharField()
    start_time = serializers.DateTimeField()
    error_category = serializers.CharField()
    error_type = serializers.CharField()
    mlflow_url = serializers.URLField(allow_null=True, help_text="The run in the MLflow UI (null: MLFLOW_UI_URL unset).")


class ErrorsBodySerializer(serializers.Serializer):
    total_errors = serializers.IntegerField()
    error_rate = _rate()
    by_category = ErrorCategorySerializer(many=True)
    by_type = ErrorTypeSerializer(many=True)
    per_day = ErrorDaySerializer(many=True)
    latest = FailingRunSerializer(many=True)


class AnswersSerializer(serializers.Serializer):
    runs = serializers.IntegerField()
    avg_confidence = _rate()
    avg_ms = _ms()
    p50_ms = _ms()
    p95_ms = _ms()
    labelled_runs = serializers.IntegerField()
    accuracy = _rate()


class ModelSerializer(serializers.Serializer):
    model_name = serializers.CharField(help_text="The configured model (`model_name` param of the runs).")
    runs = serializers.IntegerField()
    success_rate = _rate(help_text="Runs without an error (a fallback after an LM failure is an error).")
    lm_success_rate = _rate(help_text="Runs the model itself answered without an error.")
    fallback_rate = _rate(help_text="Runs the local backend answered because the model failed.")
    error_rate = _rate()
    avg_confidence = _rate(help_text="Of the model's own answers.")
    avg_ms = _ms(help_text="Of the model's own answers.")
    p50_ms = _ms(help_text="Of the model's own answers.")
    p95_ms = _ms(help_text="Of the model's own answers.")
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost_usd = serializers.FloatField()
    labelled_runs = serializers.IntegerField()
    accuracy = _rate()
    own_answers = AnswersSerializer(help_text="The answers the model gave itself.")
    fallback_answers = AnswersSerializer(help_text="The answers the local backend gave when the model failed.")


class ModelComparisonBodySerializer(serializers.Serializer):
    models = ModelSerializer(many=True)


class EvaluationSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    in_scope_accuracy = _rate()
    oos_recall = _rate()
    macro_f1 = _rate()
    latency_p50_ms = _ms()
    examples = serializers.IntegerField(allow_null=True)
    evaluated_at = serializers.DateTimeField()


class PromptVersionSerializer(serializers.Serializer):
    prompt_version = serializers.CharField()
    first_seen = serializers.DateTimeField(help_text="First run of this version in the period.")
    last_seen = serializers.DateTimeField(help_text="Last run of this version in the period.")
    runs = serializers.IntegerField()
    avg_confidence = _rate()
    avg_ms = _ms()
    p95_ms = _ms()
    error_rate = _rate()
    out_of_scope_rate = _rate()
    labelled_runs = serializers.IntegerField()
    accuracy = _rate()
    evaluation = EvaluationSerializer(allow_null=True, help_text="Latest offline evaluation of this version.")


class PromptAnalysisBodySerializer(serializers.Serializer):
    versions = PromptVersionSerializer(many=True)


class SlaSerializer(serializers.Serializer):
    p95_ms_target = serializers.FloatField()
    error_rate_target = serializers.FloatField()
    days_with_runs = serializers.IntegerField()
    days_meeting_p95 = serializers.IntegerField()
    days_meeting_error_rate = serializers.IntegerField()
    share_meeting_p95 = _rate()
    share_meeting_error_rate = _rate()


class ConfusionCellSerializer(serializers.Serializer):
    expected = serializers.CharField()
    detected = serializers.CharField()
    count = serializers.IntegerField()


class IntentScoreSerializer(serializers.Serializer):
    intent = serializers.CharField()
    precision = _rate()
    recall = _rate()
    f1 = _rate()
    support = serializers.IntegerField()


# --- Examples ----------------------------------------------------------------------------------------------

HEADER_EXAMPLE = {"period": {"days": 7, "since": "2026-11-20", "until": "2026-11-26"}, "filters": {}}
OVERVIEW_EXAMPLE = {
    "total_runs": 1200, "success_rate": 0.9875, "error_rate": 0.0125, "avg_confidence": 0.8123,
    "response_time_ms": {"avg": 212.4, "p50": 1.214, "p95": 1021.8, "p99": 2154.3},
    "template_match_rate": 0.41, "out_of_scope_rate": 0.0825, "fallback_rate": 0.02,
    "tokens": {"prompt": 84210, "completion": 9120, "total": 93330}, "cost_usd": 0.0291,
    "labelled_runs": 40, "accuracy": 0.925,
    "intent_distribution": [{"intent": "transfer", "runs": 300, "share": 0.25},
                            {"intent": "out_of_scope", "runs": 99, "share": 0.0825}],
    "user_roles": [{"user_role": "customer", "runs": 1000, "share": 0.8333}],
    "modules": [{"module": "banking", "runs": 800, "share": 0.6667}],
}
TREND_DAY = {"day": "2026-11-26", "runs": 180, "success_rate": 0.9889, "avg_confidence": 0.81, "p50_ms": 1.2,
             "p95_ms": 980.5, "out_of_scope_rate": 0.0833, "error_rate": 0.0111}
EMPTY_DAY = {"day": "2026-11-25", "runs": 0, "success_rate": None, "avg_confidence": None, "p50_ms": None,
             "p95_ms": None, "out_of_scope_rate": None, "error_rate": None}
ERRORS_EXAMPLE = {
    "total_errors": 15, "error_rate": 0.0125,
    "by_category": [{"error_category": "lm_timeout", "count": 10, "fallbacks": 14, "runs": 24}],
    "by_type": [{"error_type": "TimeoutError", "error_category": "lm_timeout", "count": 10,
                 "sample_run_id": "3f0c9e2b6a1d4f7e8b5c2a9d0e1f3a4b"}],
    "per_day": [{"day": "2026-11-26", "runs": 180, "errors": 2, "error_rate": 0.0111}],
    "latest": [{"run_id": "3f0c9e2b6a1d4f7e8b5c2a9d0e1f3a4b", "request_id": "6f1c3e0a-8d3b-4c1e-9a57-2d1f0b7a9c11",
                "start_time": "2026-11-26T09:14:03.120000Z", "error_category": "lm_timeout",
                "error_type": "TimeoutError",
                "mlflow_url": "http://127.0.0.1:5000/#/experiments/1/runs/3f0c9e2b6a1d4f7e8b5c2a9d0e1f3a4b"}],
}
MODELS_EXAMPLE = {"models": [{
    "model_name": "openai/gpt-4o-mini", "runs": 400, "success_rate": 0.97, "lm_success_rate": 0.97,
    "fallback_rate": 0.03, "error_rate": 0.03, "avg_confidence": 0.88, "avg_ms": 640.2, "p50_ms": 610.0,
    "p95_ms": 1350.7, "prompt_tokens": 84210, "completion_tokens": 9120, "cost_usd": 0.0291, "labelled_runs": 25,
    "accuracy": 0.96,
    "own_answers": {"runs": 388, "avg_confidence": 0.88, "avg_ms": 640.2, "p50_ms": 610.0, "p95_ms": 1350.7,
                    "labelled_runs": 24, "accuracy": 0.9583},
    "fallback_answers": {"runs": 12, "avg_confidence": 0.91, "avg_ms": 10002.1, "p50_ms": 10001.0,
                         "p95_ms": 10004.2, "labelled_runs": 1, "accuracy": 1.0}}]}
PROMPTS_EXAMPLE = {"versions": [{
    "prompt_version": "3fa2c81d09be", "first_seen": "2026-11-01T08:00:00Z", "last_seen": "2026-11-26T09:14:03Z",
    "runs": 1200, "avg_confidence": 0.81, "avg_ms": 212.4, "p95_ms": 1021.8, "error_rate": 0.0125,
    "out_of_scope_rate": 0.0825, "labelled_runs": 40, "accuracy": 0.925,
    "evaluation": {"run_id": "9a8b7c6d5e4f40312a1b2c3d4e5f6a7b", "in_scope_accuracy": 0.924, "oos_recall": 0.583,
                   "macro_f1": 0.91, "latency_p50_ms": 0.05, "examples": 5500,
                   "evaluated_at": "2026-11-25T18:02:11Z"}}]}
SLA_EXAMPLE = {"p95_ms_target": 1000.0, "error_rate_target": 0.01, "days_with_runs": 29, "days_meeting_p95": 27,
               "days_meeting_error_rate": 25, "share_meeting_p95": 0.931, "share_meeting_error_rate": 0.862}
CONFUSION_EXAMPLE = {
    "labelled_runs": 3, "accuracy": 0.6667,
    "matrix": [{"expected": "balance", "detected": "balance", "count": 2},
               {"expected": "transfer", "detected": "balance", "count": 1}],
    "per_intent": [{"intent": "balance", "precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2},
                   {"intent": "transfer", "precision": None, "recall": 0.0, "f1": None, "support": 1}],
}
ERROR_400 = OpenApiExample("Bad period", status_codes=["400"], response_only=True,
                           value={"days": ["Ensure this value is less than or equal to 365."]})


def _example(name: str, body: dict[str, Any], **header: Any) -> OpenApiExample:
    return OpenApiExample(name, value=HEADER_EXAMPLE | header | body, response_only=True, status_codes=["200"])


def _schema(*, operation_id: str, summary: str, body: type[serializers.Serializer], example: dict[str, Any],
            filters: type[serializers.Serializer], extra_parameters: tuple | list = (), **extra: Any):
    output = type(f"{body.__name__.replace('Body', '')}Response", (HeaderSerializer, body), {})
    return extend_schema(
        operation_id=operation_id, summary=summary, parameters=[filters, *extra_parameters],
        responses={200: output, 400: {"type": "object", "additionalProperties": {"type": "array",
                                                                                 "items": {"type": "string"}}}},
        examples=[_example(summary, example), ERROR_400], **extra)


# --- Views ---------------------------------------------------------------------------------------------------

class ReportBaseApi(APIView):
    """Base of the report views: staff only (anonymous 401, others 403); GET with the filter params."""

    permission_classes = [IsAdminUser]
    throttle_scope = "analytics"
    FilterSerializer: type[serializers.Serializer] = ReportFilterSerializer

    def scope(self, request) -> Scope:
        serializer = self.FilterSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return scope_get(days=data["days"], until=data.get("until"),
                         filters={name: data[name] for name in FILTERS if name in data})


class OverviewApi(ReportBaseApi):
    class FilterSerializer(WeekFilterSerializer):
        pass

    @_schema(operation_id="analytics_overview", summary="Overview of the detections", body=OverviewBodySerializer,
             example=OVERVIEW_EXAMPLE, filters=WeekFilterSerializer)
    def get(self, request):
        return Response(overview_get(scope=self.scope(request)))


class TrendsApi(ReportBaseApi):
    class FilterSerializer(ReportFilterSerializer):
        pass

    @_schema(operation_id="analytics_trends", summary="Daily trends", body=TrendsBodySerializer,
             example={"days": [EMPTY_DAY, TREND_DAY]}, filters=ReportFilterSerializer)
    def get(self, request):
        return Response(trends_get(scope=self.scope(request)))


class ErrorsApi(ReportBaseApi):
    class FilterSerializer(WeekFilterSerializer):
        pass

    @_schema(operation_id="analytics_errors", summary="Errors", body=ErrorsBodySerializer, example=ERRORS_EXAMPLE,
             filters=WeekFilterSerializer)
    def get(self, request):
        return Response(errors_get(scope=self.scope(request)))


class ModelComparisonApi(ReportBaseApi):
    class FilterSerializer(ReportFilterSerializer):
        pass

    @_schema(operation_id="analytics_model_comparison", summary="Models compared",
             body=ModelComparisonBodySerializer, example=MODELS_EXAMPLE, filters=ReportFilterSerializer)
    def get(self, request):
        return Response(model_comparison_get(scope=self.scope(request)))


class PromptAnalysisApi(ReportBaseApi):
    class FilterSerializer(ReportFilterSerializer):
        pass

    @_schema(operation_id="analytics_prompt_analysis", summary="Prompt versions compared",
             body=PromptAnalysisBodySerializer, example=PROMPTS_EXAMPLE, filters=ReportFilterSerializer)
    def get(self, request):
        return Response(prompt_analysis_get(scope=self.scope(request)))


class CSVRenderer(BaseRenderer):
    """Lets `?format=csv` through DRF's content negotiation; the view writes the CSV itself."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


class ReportBodySerializer(serializers.Serializer):
    overview = OverviewBodySerializer()
    trends = TrendsBodySerializer()
    errors = ErrorsBodySerializer()
    model_comparison = ModelComparisonBodySerializer()
    prompt_analysis = PromptAnalysisBodySerializer()
    sla = SlaSerializer()


class ReportApi(ReportBaseApi):
    renderer_classes = [JSONRenderer, CSVRenderer]

    class FilterSerializer(ReportFilterSerializer):
        allowed_extra = frozenset({"format"})  # read by DRF's content negotiation

    @_schema(operation_id="analytics_report", summary="Full report", body=ReportBodySerializer,
             example={"overview": OVERVIEW_EXAMPLE, "trends": {"days": [TREND_DAY]}, "errors": ERRORS_EXAMPLE,
                      "model_comparison": MODELS_EXAMPLE, "prompt_analysis": PROMPTS_EXAMPLE, "sla": SLA_EXAMPLE},
             filters=ReportFilterSerializer,
             extra_parameters=[OpenApiParameter("format", str, enum=["json", "csv"],
                                                description="`csv`: the daily trends table as a CSV download.")],
             description="All reports of the period in one document, plus the SLA lines. `?format=csv` "
                         "downloads the daily trends table as CSV instead.")
    def get(self, request):
        scope = self.scope(request)
        if request.accepted_renderer.format == "csv":
            filename = f"intent-report-{scope.since.isoformat()}-{scope.until.isoformat()}.csv"
            response = HttpResponse(trends_csv(rows=trends_get(scope=scope)["days"]), content_type="text/csv")
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            return response
        return Response(report_get(scope=scope))

    def handle_exception(self, exc):
        # Errors are JSON, whatever format was asked for.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


class ConfusionApi(ReportBaseApi):
    class FilterSerializer(ReportFilterSerializer):
        pass

    class OutputBodySerializer(serializers.Serializer):
        labelled_runs = serializers.IntegerField()
        accuracy = _rate()
        matrix = ConfusionCellSerializer(many=True)
        per_intent = IntentScoreSerializer(many=True)

    @_schema(operation_id="analytics_confusion", summary="Confusion of labelled runs", body=OutputBodySerializer,
             example=CONFUSION_EXAMPLE, filters=ReportFilterSerializer)
    def get(self, request):
        return Response(confusion_get(scope=self.scope(request)))
