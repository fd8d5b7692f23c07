"""System checks: the mirror has a typed column for every name of the tracking contract that asks for one; the
retentions of MLflow and of the mirror fit together."""

from __future__ import annotations

from django.core import checks
from django.core.exceptions import FieldDoesNotExist
from django.db import models

from intentsite import contract

# The model field each kind of contract value is typed into.
FIELD_TYPES: dict[str, type[models.Field]] = {
    "text": models.CharField, "optional_text": models.CharField, "boolean": models.BooleanField,
    "integer": models.IntegerField, "real": models.FloatField, "whole": models.IntegerField,
    "feedback": models.BooleanField,
}


def mirror_columns_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    from .models import MirroredRun

    errors = []
    for field in contract.FIELDS:
        if not field.column:
            continue
        try:
            column = MirroredRun._meta.get_field(field.name)
        except FieldDoesNotExist:
            errors.append(checks.Error(
                f"The contract asks for a typed column {field.name!r} ({field.kind}); MirroredRun has none.",
                hint=f"Add `{field.name}` to analytics.models.MirroredRun, then `manage.py makemigrations analytics`.",
                obj=MirroredRun, id="analytics.E001"))
            continue
        expected = FIELD_TYPES[field.kind]
        text = field.kind in ("text", "optional_text")
        if (not isinstance(column, expected) or (text and column.max_length != field.max_length)
                or (field.kind == "optional_text") != (text and column.null)):
            errors.append(checks.Error(
                f"MirroredRun.{field.name} is not what the contract's {field.kind} value needs "
                f"({expected.__name__}{f', max_length {field.max_length}' if text else ''}).",
                obj=MirroredRun, id="analytics.E002"))
    return errors


def retention_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """MLflow's runs must outlive the mirror's raw rows: a run deleted from MLflow while its day is still kept raw
    leaves the mirror, and that day's rollups are recomputed without it (history lost)."""
    from django.conf import settings

    mlflow_days, raw_days = settings.TRACKING_MLFLOW_RETENTION_DAYS, settings.ANALYTICS_RAW_RETENTION_DAYS
    if mlflow_days > 0 and (raw_days <= 0 or mlflow_days < raw_days):
        return [checks.Error(
            f"TRACKING_MLFLOW_RETENTION_DAYS={mlflow_days} deletes MLflow runs whose mirrored rows are still kept "
            f"(ANALYTICS_RAW_RETENTION_DAYS={raw_days or 'forever'}): their days' rollups would lose them.",
            hint="Set TRACKING_MLFLOW_RETENTION_DAYS to at least ANALYTICS_RAW_RETENTION_DAYS (which must be > 0).",
            id="analytics.E003")]
    return []
