"""Retention of stored detection details: the message text goes after INTENT_MESSAGE_RETENTION_DAYS, the whole
detail after ANALYTICS_RAW_RETENTION_DAYS (with the mirrored raw rows)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings

from ..models import DetectionDetail

CHUNK = 5_000


def detection_messages_erase(*, now: datetime, dry_run: bool = False) -> int:
    """Erase the stored text of detections older than the message retention. Returns how many."""
    expired = DetectionDetail.objects.filter(
        created_at__lt=now - timedelta(days=settings.INTENT_MESSAGE_RETENTION_DAYS)).exclude(message="")
    if dry_run:
        return expired.count()
    erased = 0
    while ids := list(expired.order_by().values_list("pk", flat=True)[:CHUNK]):
        erased += DetectionDetail.objects.filter(pk__in=ids).update(message="", message_erased_at=now)
    return erased


def detection_details_purge(*, now: datetime, dry_run: bool = False) -> int:
    """Delete the details of detections older than the raw retention (none with ANALYTICS_RAW_RETENTION_DAYS=0)."""
    if settings.ANALYTICS_RAW_RETENTION_DAYS <= 0:
        return 0
    expired = DetectionDetail.objects.filter(
        created_at__lt=now - timedelta(days=settings.ANALYTICS_RAW_RETENTION_DAYS))
    if dry_run:
        return expired.count()
    removed = 0
    while ids := list(expired.order_by().values_list("pk", flat=True)[:CHUNK]):
        removed += DetectionDetail.objects.filter(pk__in=ids).delete()[0]
    return removed
