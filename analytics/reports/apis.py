"""The analytics reports over HTTP (contract A), staff only: validate the period and the filters, call one
selector, send its answer through the report's Output serializer (what the OpenAPI schema documents). Answers are
cached as sent, until the next sync finishes (`scope.answer_cached`): serializing the full report takes ~3 ms, three
times what a cached answer costs, so it is done once per sync, not on every request (bench/analytics.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema_view
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from intentsite.renderers import FastJSONRenderer
from intentsite.serializers import api_schema

from .calibration import (
    CALIBRATION_EXAMPLE,
    CalibrationFilterSerializer,
    CalibrationReportSerializer,
    calibration_get,
)
from .examples import (
    CONFUSION_EXAMPLE,
    EMPTY_DAY,
    ERROR_400,
    ERRORS_EXAMPLE,
    HEADER_EXAMPLE,
    MODELS_EXAMPLE,
    OVERVIEW_EXAMPLE,
    PROMPTS_EXAMPLE,
    SLA_EXAMPLE,
    TREND_DAY,
)
from .exports import trends_csv
from .scope import FILTERS, Scope, answer_cached, scope_get
from .selectors import (
    confusion_get,
    errors_get,
    model_comparison_get,
    overview_get,
    prompt_analysis_get,
    report_get,
    trends_get,
)
from .serializers import (
    ConfusionReportSerializer,
    ErrorsReportSerializer,
    FullReportFilterSerializer,
    FullReportSerializer,
    ModelComparisonReportSerializer,
    OverviewReportSerializer,
    PromptAnalysisReportSerializer,
    ReportFilterSerializer,
    TrendsReportSerializer,
    WeekFilterSerializer,
)

ERRORS = (400, 401, 403, 429)


def report_schema(*, summary: str, example: dict[str, Any], csv: bool = False, **extra: Any):
    """The OpenAPI description of a report view (a class decorator): its query parameters and its answer are the
    view's own FilterSerializer and OutputSerializer, so the schema cannot say something the view does not do."""

    def decorate(view: type[ReportBaseApi]) -> type[ReportBaseApi]:
        ok = OpenApiExample(summary, value=HEADER_EXAMPLE | example, response_only=True, status_codes=["200"])
        responses: dict[Any, Any] = {(200, "application/json"): view.OutputSerializer}
        if csv:
            responses[(200, "text/csv")] = OpenApiTypes.STR
        return extend_schema_view(get=api_schema(
            operation_id=view.operation_id, summary=summary, parameters=[view.FilterSerializer],
            responses=responses, errors=ERRORS, examples=[ok, ERROR_400], **extra))(view)

    return decorate


@functools.cache
def _representer(output: type[serializers.Serializer]) -> serializers.Serializer:
    """One instance per Output serializer, its fields built once: a serializer deep-copies its declared fields (and
    those of every nested serializer) when first asked for them, about half of serializing a report (measured,
    bench/analytics.py). `to_representation` only reads the instance, so requests and threads can share it."""
    return output()


def serialized_answer(name: str, output: type[serializers.Serializer], selector: Callable[..., dict[str, Any]],
                      scope: Scope) -> dict[str, Any]:
    """The selector's answer through its Output serializer, cached as such until the next sync."""
    return answer_cached(scope=scope, name=name,
                         compute=lambda: _representer(output).to_representation(selector(scope=scope)))


class ReportBaseApi(APIView):
    """Base of the report views: staff only (anonymous 401, others 403); GET with the filter params."""

    permission_classes = [IsAdminUser]
    throttle_scope = "analytics"
    operation_id: str
    FilterSerializer: type[serializers.Serializer] = ReportFilterSerializer
    OutputSerializer: type[serializers.Serializer]

    def scope(self, request) -> Scope:
        serializer = self.FilterSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        data = self.params = serializer.validated_data
        return scope_get(days=data["days"], until=data.get("until"),
                         filters={name: data[name] for name in FILTERS if name in data})

    def answer(self, selector: Callable[..., dict[str, Any]], scope: Scope, *, variant: str = "") -> Response:
        """The selector's answer, cached per operation and scope (and `variant`: the parameters beyond them)."""
        name = f"{self.operation_id}:{variant}" if variant else self.operation_id
        return Response(serialized_answer(name, self.OutputSerializer, selector, scope))


@report_schema(summary="Overview of the detections", example=OVERVIEW_EXAMPLE)
class OverviewApi(ReportBaseApi):
    operation_id = "analytics_overview"
    FilterSerializer = WeekFilterSerializer
    OutputSerializer = OverviewReportSerializer

    def get(self, request):
        return self.answer(overview_get, self.scope(request))


@report_schema(summary="Daily trends", example={"days": [EMPTY_DAY, TREND_DAY]})
class TrendsApi(ReportBaseApi):
    operation_id = "analytics_trends"
    OutputSerializer = TrendsReportSerializer

    def get(self, request):
        return self.answer(trends_get, self.scope(request))


@report_schema(summary="Errors", example=ERRORS_EXAMPLE)
class ErrorsApi(ReportBaseApi):
    operation_id = "analytics_errors"
    FilterSerializer = WeekFilterSerializer
    OutputSerializer = ErrorsReportSerializer

    def get(self, request):
        return self.answer(errors_get, self.scope(request))


@report_schema(summary="Models compared", example=MODELS_EXAMPLE)
class ModelComparisonApi(ReportBaseApi):
    operation_id = "analytics_model_comparison"
    OutputSerializer = ModelComparisonReportSerializer

    def get(self, request):
        return self.answer(model_comparison_get, self.scope(request))


@report_schema(summary="Prompt versions compared", example=PROMPTS_EXAMPLE)
class PromptAnalysisApi(ReportBaseApi):
    operation_id = "analytics_prompt_analysis"
    OutputSerializer = PromptAnalysisReportSerializer

    def get(self, request):
        return self.answer(prompt_analysis_get, self.scope(request))


class CSVRenderer(BaseRenderer):
    """Lets `?format=csv` (or `Accept: text/csv`) through DRF's content negotiation; the view writes the CSV."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


@report_schema(summary="Full report", csv=True,
               example={"overview": OVERVIEW_EXAMPLE, "trends": {"days": [TREND_DAY]}, "errors": ERRORS_EXAMPLE,
                        "model_comparison": MODELS_EXAMPLE, "prompt_analysis": PROMPTS_EXAMPLE, "sla": SLA_EXAMPLE},
               description="All reports of the period in one document, plus the SLA lines. `?format=csv` "
                           "downloads the daily trends table as CSV instead.")
class ReportApi(ReportBaseApi):
    operation_id = "analytics_report"
    renderer_classes = [FastJSONRenderer, CSVRenderer]
    FilterSerializer = FullReportFilterSerializer
    OutputSerializer = FullReportSerializer

    def perform_content_negotiation(self, request, force=False):
        # An unknown `?format=` is the filter serializer's 400 (it names the choices), not DRF's bare 404.
        return super().perform_content_negotiation(request, force=True)

    def get(self, request):
        scope = self.scope(request)
        if request.accepted_renderer.format == "csv":
            filename = f"intent-report-{scope.since.isoformat()}-{scope.until.isoformat()}.csv"
            trends = serialized_answer(TrendsApi.operation_id, TrendsReportSerializer, trends_get, scope)
            response = HttpResponse(trends_csv(rows=trends["days"]), content_type="text/csv")
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            return response
        return self.answer(report_get, scope)

    def handle_exception(self, exc):
        # Errors are JSON, whatever format was asked for.
        self.request.accepted_renderer = FastJSONRenderer()
        self.request.accepted_media_type = FastJSONRenderer.media_type
        return super().handle_exception(exc)


@report_schema(summary="Calibration of the confidences, with threshold advice", example=CALIBRATION_EXAMPLE)
class CalibrationApi(ReportBaseApi):
    operation_id = "analytics_calibration"
    FilterSerializer = CalibrationFilterSerializer
    OutputSerializer = CalibrationReportSerializer

    def get(self, request):
        scope = self.scope(request)
        bins, target = self.params["bins"], self.params["target_precision"]
        return self.answer(functools.partial(calibration_get, bins=bins, target_precision=target), scope,
                           variant=f"{bins}:{target!r}")


@report_schema(summary="Confusion of labelled runs", example=CONFUSION_EXAMPLE)
class ConfusionApi(ReportBaseApi):
    operation_id = "analytics_confusion"
    OutputSerializer = ConfusionReportSerializer

    def get(self, request):
        return self.answer(confusion_get, self.scope(request))
