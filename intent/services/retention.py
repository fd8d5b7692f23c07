"""Expired data, removed once a day (beat) or by `python manage.py purge_expired_data [--dry-run]`.

What goes, each by its setting: stored message text (INTENT_MESSAGE_RETENTION_DAYS, 30), detection details, shadow
candidates' answers and mirrored raw rows (ANALYTICS_RAW_RETENTION_DAYS, 90; daily rollups stay, frozen), detection runs and traces in MLflow
(TRACKING_MLFLOW_RETENTION_DAYS, off by default). Logged outbox rows have their own retention in the flush."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from analytics.mirror.retention import mirrored_runs_purge

from .. import tracking
from ..models import ShadowDetection
from ..review.retention import detection_details_purge, detection_messages_erase

logger = logging.getLogger(__name__)


def expired_data_purge(*, dry_run: bool = False) -> dict[str, int]:
    """Remove what is past its retention (count it only, with `dry_run`). Returns the counts by kind."""
    now = timezone.now()
    removed = {
        "message_texts": detection_messages_erase(now=now, dry_run=dry_run),
        "detection_details": detection_details_purge(now=now, dry_run=dry_run),
        "mirrored_runs": mirrored_runs_purge(now=now, dry_run=dry_run),
        "shadow_detections": _shadow_detections_purge(now=now, dry_run=dry_run),
        "mlflow_runs": 0,
        "mlflow_traces": 0,
    }
    if settings.TRACKING_MLFLOW_RETENTION_DAYS > 0:
        before_ms = int((now - timedelta(days=settings.TRACKING_MLFLOW_RETENTION_DAYS)).timestamp() * 1000)
        expired = tracking.detection_runs_expire(before_ms=before_ms, dry_run=dry_run)
        removed["mlflow_runs"], removed["mlflow_traces"] = expired["runs"], expired["traces"]
    logger.info("Expired data %s: %s", "found (dry run)" if dry_run else "removed",
                ", ".join(f"{kind} {count}" for kind, count in removed.items()))
    return removed


def _shadow_detections_purge(*, now, dry_run: bool) -> int:
    """Shadow answers older than the raw rows' retention (an experiment's shadow results then count what is left)."""
    expired = ShadowDetection.objects.filter(created_at__lt=now - timedelta(days=settings.ANALYTICS_RAW_RETENTION_DAYS))
    return expired.count() if dry_run else expired.delete()[0]
