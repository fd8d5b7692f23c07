"""Helpers of the monitors' tests: mirrored runs written straight into the mirror (with their rollups, by the
sync's own code) at chosen times, and reference values computed from those raw rows."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from analytics.mirror.rollups import rollups_refresh
from analytics.models import MirroredRun, Monitor, SyncState

from .reference import nearest_rank

EXPERIMENT_ID = "1"


def mirror_ready() -> None:
    SyncState.objects.update_or_create(experiment_name=settings.MLFLOW_EXPERIMENT_NAME,
                                       defaults={"experiment_id": EXPERIMENT_ID})


def run_row(start: datetime, *, intent: str = "balance", module: str = "banking", role: str = "customer",
            model: str = "local/tfidf-linear", prompt_version: str = "v1", error: bool = False,
            fallback: bool = False, confidence: float = 0.9, latency_ms: float = 2.0,
            correct: bool | None = None) -> MirroredRun:
    from analytics.mirror.sketch import sketch_key

    return MirroredRun(
        run_id=uuid.uuid4().hex, experiment_id=EXPERIMENT_ID, status="FAILED" if error else "FINISHED",
        start_time=start, end_time=start + timedelta(milliseconds=latency_ms), day=start.date(),
        detected_intent=intent, user_role=role, current_module=module, model_name=model, answered_by=model,
        prompt_version=prompt_version, is_error=error, fallback_used=fallback, error_category="lm_timeout" if error else "",
        confidence_score=confidence, response_time_ms=latency_ms, latency_bucket=sketch_key(latency_ms),
        template_match_rate=0.0, is_correct=correct, expected_intent=None if correct is None else intent,
        mirrored_at=timezone.now())


def mirror_write(rows: Iterable[MirroredRun]) -> list[MirroredRun]:
    """Insert the rows and recompute the rollups of their days, as the sync would."""
    rows = list(rows)
    MirroredRun.objects.bulk_create(rows, batch_size=500)
    rollups_refresh(experiment_id=EXPERIMENT_ID, days={row.day for row in rows})
    return rows


def reference_value(rows: Iterable[MirroredRun], *, metric: str, start: datetime, end: datetime,
                    filters: dict[str, str] | None = None, intent: str = "") -> tuple[float | None, int]:
    """The metric over the raw rows started in [start, end) that match the filters."""
    columns = {"module": "current_module", "user_role": "user_role", "model_name": "model_name",
               "prompt_version": "prompt_version"}
    chosen = [row for row in rows if start <= row.start_time < end
              and all(getattr(row, columns[name]) == value for name, value in (filters or {}).items())]
    runs = len(chosen)
    if metric == "accuracy":
        labelled = [row for row in chosen if row.is_correct is not None]
        return (sum(row.is_correct for row in labelled) / len(labelled) if labelled else None), len(labelled)
    if not runs:
        return None, 0
    values: dict[str, Any] = {
        "runs": float(runs),
        "error_rate": sum(row.is_error for row in chosen) / runs,
        "fallback_rate": sum(bool(row.fallback_used) for row in chosen) / runs,
        "out_of_scope_rate": sum(row.detected_intent == "out_of_scope" for row in chosen) / runs,
        "avg_confidence": sum(row.confidence_score for row in chosen) / runs,
        "latency_p50_ms": nearest_rank([row.response_time_ms for row in chosen], 0.5),
        "latency_p95_ms": nearest_rank([row.response_time_ms for row in chosen], 0.95),
        "intent_share": sum(row.detected_intent == intent for row in chosen) / runs,
    }
    return values[metric], runs


def monitor(**fields: Any) -> Monitor:
    defaults = {"name": f"m-{uuid.uuid4().hex[:8]}", "kind": "threshold", "metric": "error_rate",
                "window_minutes": 15, "comparator": "above", "min_runs": 5}
    return Monitor.objects.create(**(defaults | fields))


def step_floor(moment: datetime) -> datetime:
    return moment - timedelta(minutes=moment.minute % 5, seconds=moment.second, microseconds=moment.microsecond)


def close(value: float | None, expected: float | None, *, rel: float = 1e-9) -> bool:
    if value is None or expected is None:
        return value is expected
    return math.isclose(value, expected, rel_tol=rel, abs_tol=1e-12)
