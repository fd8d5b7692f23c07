"""Routes under /api/analytics/mlflow/."""

from django.urls import path

from .apis.ops import ExperimentsRecreateApi, HealthApi

app_name = "analytics"

urlpatterns: list = [
    # reports (analytics/apis/reports.py)
    # ops: health, experiments/recreate (analytics/apis/ops.py)
    path("health", HealthApi.as_view(), name="health"),
    path("experiments/recreate", ExperimentsRecreateApi.as_view(), name="experiments-recreate"),
]
