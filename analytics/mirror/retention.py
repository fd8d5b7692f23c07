"""Raw-row retention: mirrored runs are kept ANALYTICS_RAW_RETENTION_DAYS days; older days keep their daily rollups
forever, frozen.

The horizon is the first day still kept raw: today (UTC) minus the retention. A day before it whose rollups are done
is frozen: the sync writes and removes none of its runs and never recomputes it, its reconcile compares run ids from
the horizon on, and the purge deletes its raw rows. So purged rows never come back, and a frozen day's rollups are
never recomputed from a partial set of rows. A day before the horizon without rollups (the history a fresh mirror
meets in a full read) is mirrored once, its rollups computed, then frozen. Reports over older periods answer from
the rollups; what only raw rows can answer (a filter on a folded value, examples, calibration) has no rows there.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..models import DailyRollup, MirroredRun, SyncState

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


def frozen_days(*, experiment_id: str, horizon: date) -> set[date]:
    """The experiment's days before the horizon whose rollups are done (they have rollups and are not waiting for
    a recompute): frozen, their raw rows free to go."""
    state = SyncState.objects.filter(experiment_id=experiment_id).values_list("dirty_days", flat=True).first()
    waiting = {date.fromisoformat(day) for day in state or ()}
    return set(DailyRollup.objects.filter(experiment_id=experiment_id, day__lt=horizon).values_list(
        "day", flat=True).distinct().order_by()) - waiting


def mirrored_runs_purge(*, dry_run: bool = False, now: datetime | None = None) -> int:
    """Delete the mirrored rows of frozen days (before the horizon, rollups done), a chunk per transaction, and count
    them out of their experiment's `mirrored_runs`; their rollups stay. Returns how many rows went (or would go,
    with `dry_run`)."""
    horizon = raw_horizon(now=now)
    if horizon is None:
        return 0
    removed = 0
    experiments = SyncState.objects.exclude(experiment_id="").values_list("experiment_id", flat=True)
    for experiment_id in sorted(set(experiments)):
        expired = MirroredRun.objects.filter(experiment_id=experiment_id, day__in=sorted(
            frozen_days(experiment_id=experiment_id, horizon=horizon)))
        if dry_run:
            removed += expired.count()
            continue
        while ids := list(expired.order_by().values_list("pk", flat=True)[:PURGE_CHUNK]):
            with transaction.atomic():
                MirroredRun.objects.filter(pk__in=ids).delete()
                SyncState.objects.filter(experiment_id=experiment_id).update(mirrored_runs=F("mirrored_runs") - len(ids))
            removed += len(ids)
    return removed
