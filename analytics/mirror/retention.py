"""Raw-row retention: mirrored runs are kept ANALYTICS_RAW_RETENTION_DAYS days; older days keep their daily rollups
forever, frozen.

The horizon is the first day still kept raw: today (UTC) minus the retention. The sync reads no run that started
before it, recomputes no rollup of a day before it, and its reconcile compares run ids from it on, so purged rows
never come back and a frozen day's rollups never get recomputed from a partial set of rows. Reports over older
periods answer from those rollups; what only raw rows can answer (a filter on a folded value, examples) has no
rows there.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..models import MirroredRun, SyncState

PURGE_CHUNK = 5_000


def raw_horizon(*, now: datetime | None = None) -> date | None:
    """The first day whose raw rows are kept (None: kept forever, ANALYTICS_RAW_RETENTION_DAYS=0)."""
    days = settings.ANALYTICS_RAW_RETENTION_DAYS
    if days <= 0:
        return None
    return (now or timezone.now()).astimezone(UTC).date() - timedelta(days=days)


def raw_horizon_ms(*, now: datetime | None = None) -> int | None:
    """The horizon as MLflow's start-time milliseconds (midnight UTC of its day)."""
    horizon = raw_horizon(now=now)
    if horizon is None:
        return None
    return int(datetime(horizon.year, horizon.month, horizon.day, tzinfo=UTC).timestamp() * 1000)


def mirrored_runs_purge(*, dry_run: bool = False, now: datetime | None = None) -> int:
    """Delete the mirrored rows of days before the horizon, a chunk per transaction, and count them out of their
    experiment's `mirrored_runs`; their rollups stay. Returns how many rows went (or would go, with `dry_run`)."""
    horizon_ms = raw_horizon_ms(now=now)
    if horizon_ms is None:
        return 0
    expired = MirroredRun.objects.filter(start_time__lt=datetime.fromtimestamp(horizon_ms / 1000, tz=UTC))
    if dry_run:
        return expired.count()
    removed = 0
    while True:
        rows = list(expired.order_by().values_list("pk", "experiment_id")[:PURGE_CHUNK])
        if not rows:
            return removed
        with transaction.atomic():
            MirroredRun.objects.filter(pk__in=[pk for pk, _ in rows]).delete()
            for experiment_id, count in Counter(experiment for _, experiment in rows).items():
                SyncState.objects.filter(experiment_id=experiment_id).update(mirrored_runs=F("mirrored_runs") - count)
        removed += len(rows)
