"""The analytics reports over HTTP (contract A), staff only: validate the period and the filters, call one
selector, return its dict. The Output serializers describe the responses in the OpenAPI schema; the
selectors' dicts are JSON-ready already, so they are returned as they are (no per-field pass)."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

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
from .scope import FILTERS, Scope, scope_get
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
    ConfusionBodySerializer,
    ErrorsBodySerializer,
    HeaderSerializer,
    ModelComparisonBodySerializer,
    OverviewBodySerializer,
    PromptAnalysisBodySerializer,
    ReportBodySerializer,
    ReportFilterSerializer,
    TrendsBodySerializer,
    WeekFilterSerializer,
)


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

    @_schema(operation_id="analytics_confusion", summary="Confusion of labelled runs", body=ConfusionBodySerializer,
             example=CONFUSION_EXAMPLE, filters=ReportFilterSerializer)
    def get(self, request):
        return Response(confusion_get(scope=self.scope(request)))
