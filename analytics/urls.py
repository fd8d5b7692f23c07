"""Routes under /api/analytics/mlflow/."""

from django.urls import path  # noqa: F401

app_name = "analytics"

urlpatterns: list = [
    # reports (analytics/apis/reports.py)
    # ops: health, experiments/recreate (analytics/apis/ops.py)
]
