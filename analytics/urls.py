"""Routes under /api/analytics/mlflow/."""

from django.urls import path

from .ops.apis import ExperimentsRecreateApi, HealthApi
from .reports import apis as reports
from .reports.gaps import GapsApi, GapsMineApi

app_name = "analytics"

urlpatterns: list = [
    # reports (analytics/reports/apis.py)
    path("overview", reports.OverviewApi.as_view(), name="overview"),
    path("trends", reports.TrendsApi.as_view(), name="trends"),
    path("errors", reports.ErrorsApi.as_view(), name="errors"),
    path("model-comparison", reports.ModelComparisonApi.as_view(), name="model-comparison"),
    path("prompt-analysis", reports.PromptAnalysisApi.as_view(), name="prompt-analysis"),
    path("report", reports.ReportApi.as_view(), name="report"),
    path("confusion", reports.ConfusionApi.as_view(), name="confusion"),
    path("calibration", reports.CalibrationApi.as_view(), name="calibration"),
    path("gaps", GapsApi.as_view(), name="gaps"),
    path("gaps/mine", GapsMineApi.as_view(), name="gaps-mine"),
    # ops: health, experiments/recreate (analytics/ops/apis.py)
    path("health", HealthApi.as_view(), name="health"),
    path("experiments/recreate", ExperimentsRecreateApi.as_view(), name="experiments-recreate"),
]
