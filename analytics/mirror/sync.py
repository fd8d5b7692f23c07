"""The sync: keeps `MirroredRun` and `DailyRollup` in step with MLflow, incrementally and exactly once.

MLflow has no "updated since" (runs carry start, end and deleted times only; tags can be added to a
finished run), so one sync:

1. takes the experiment's lease (an atomic conditional UPDATE on its `SyncState` row: one mechanism that
   works on SQLite and PostgreSQL alike), so two syncs of one experiment never overlap;
2. reads the runs that started at or after the watermark minus `ANALYTICS_SYNC_OVERLAP_S`, page by page
   (deleted ones included), and writes each page in one transaction (`pages.Sync.apply`); with a SQLite store
   and a SQLite mirror (the attached source) the read starts at the tail of MLflow's runs table;
3. polls again the mirrored runs still RUNNING that started before that window;
4. now and then (`ANALYTICS_RECONCILE_INTERVAL_S`, or with `full`) compares the whole run-id set with
   MLflow's: runs removed by `mlflow gc` or deleted long ago leave, restored or late runs arrive;
5. recomputes the rollups of the dirty days from their raw rows, builds the triples a saved widget asked for
   (`triples`), and advances the watermark.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.db.models import Q
from django.utils import timezone

from intentsite import contract

from ..models import WORKER_KEY_ENV, DailyRollup, MirroredRun, SyncState, WorkerHeartbeat, heartbeat_stale_after_s
from .bulk import chunked, ids_per_query
from .pages import EPOCH, Progress, Sync, SyncLeaseLost
from .sources import RunSource, run_source_get
from .triples import triples_build
from .windows import windows_purge

logger = logging.getLogger(__name__)

# While a read goes on, completed days are recomputed once this many are due (each recompute has a fixed cost).
ROLLUP_BATCH_DAYS = 7


@dataclass(frozen=True)
class SyncResult:
    experiment_name: str
    experiment_id: str = ""
    source: str = ""
    runs_read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    days_refreshed: int = 0
    reconciled: bool = False
    skipped: bool = False  # another sync held the experiment
    seconds: float = 0.0

    @property
    def runs_per_s(self) -> float:
        return self.runs_read / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        if self.skipped:
            return f"{self.experiment_name}: skipped, another sync of this experiment is running"
        return (f"{self.experiment_name}: {self.added} added, {self.updated} updated, {self.deleted} deleted "
                f"({self.unchanged} unchanged, {self.runs_read} read via {self.source or '-'}"
                f"{', reconciled' if self.reconciled else ''}) in {self.seconds:.2f} s, {self.runs_per_s:,.0f} runs/s")


def _ms_to_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def _attachable() -> bool:
    """Can a SQLite store be attached to the mirror's connection? Only to a SQLite mirror, outside a transaction:
    inside one that has read the store already, SQLite would go on showing the store as it was then, and the
    sync would miss what arrived since."""
    return connection.vendor == "sqlite" and not connection.in_atomic_block


def _lease_owner_new() -> str:
    """A new lease owner: random, followed in a Celery worker by the key of the worker that runs it."""
    key = os.environ.get(WORKER_KEY_ENV, "")
    return f"{uuid.uuid4().hex}.{key}" if key else uuid.uuid4().hex


def _lease_holder_dead(state: SyncState) -> bool:
    """Was the lease taken by a worker that has stopped beating (SIGKILLed, its machine gone) at least a
    heartbeat's staleness ago? Then its sync is dead too: waiting for the lease to expire
    (`ANALYTICS_SYNC_LEASE_S`, long enough for a slow page) would stall the mirror for that long."""
    _, _, key = state.lease_owner.partition(".")
    if not key or state.last_started_at is None:
        return False
    if (timezone.now() - state.last_started_at).total_seconds() < heartbeat_stale_after_s():
        return False
    return key not in WorkerHeartbeat.objects.alive_keys()


def _lease_take(state: SyncState, owner: str) -> bool:
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    if state.lease_owner and _lease_holder_dead(state):
        free |= Q(lease_owner=state.lease_owner)
        logger.warning("Mirror sync of %r: its lease's worker stopped beating; taking the lease over",
                       state.experiment_name)
    return bool(
        SyncState.objects.filter(pk=state.pk).filter(free)
        .update(lease_owner=owner, lease_until=now + timedelta(seconds=settings.ANALYTICS_SYNC_LEASE_S),
                last_started_at=now)
    )


@contextmanager
def _leased(name: str, progress: Progress | None) -> Iterator[Sync | None]:
    """The experiment's sync, under its lease; None while another sync holds it. A failure is recorded
    on the state and frees the lease; success frees it in `_finish`, with the new state."""
    state, _ = SyncState.objects.get_or_create(experiment_name=name)
    owner = _lease_owner_new()
    if not _lease_take(state, owner):
        logger.info("Mirror sync of %r skipped: another sync holds it", name)
        yield None
        return
    state.refresh_from_db()
    try:
        yield Sync(state, owner, progress)
    except Exception as exc:
        _lease_give_back(state, owner, error=f"{type(exc).__name__}: {exc}"[:4000])
        raise


# How long a failed sync keeps trying to give its lease back while the database is away.
LEASE_RELEASE_RETRY_S = 60.0


def _lease_give_back(state: SyncState, owner: str, *, error: str) -> None:
    """Record a failed sync and free its lease. When the failure was the database going away, the release fails
    too: it is tried again (with backoff, for up to LEASE_RELEASE_RETRY_S) rather than leaving the lease to expire,
    which would hold every sync of the experiment off for ANALYTICS_SYNC_LEASE_S (the soak's 10 s database outage
    stalled the mirror for 10 minutes)."""
    deadline, delay = time.monotonic() + LEASE_RELEASE_RETRY_S, 0.5
    while True:
        try:
            SyncState.objects.filter(pk=state.pk, lease_owner=owner).update(
                last_error=error, last_finished_at=timezone.now(), lease_owner="", lease_until=None)
            return
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block or time.monotonic() + delay > deadline:
                logger.warning("Mirror sync of %r failed and could not free its lease; it expires in %s s",
                               state.experiment_name, settings.ANALYTICS_SYNC_LEASE_S)
                return
            connection.close()  # a broken connection is not reused: the next attempt opens a new one
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def runs_sync(*, experiment_name: str | None = None, full: bool = False, progress: Progress | None = None,
              overlap_s: float | None = None) -> SyncResult:
    """Bring the mirror of one experiment up to date with MLflow (see the module's docstring).

    `full` reads every run (not only the window behind the watermark), reconciles the run-id set and
    recomputes every rollup. `progress(done, total)` is called after each page (total may be None).
    `overlap_s` replaces ANALYTICS_SYNC_OVERLAP_S for this sync (a sync a worker triggered right after logging
    runs re-reads only the last minute; beat's syncs keep the long overlap that catches runs logged late).
    Returns a `SyncResult` with `skipped=True`, and changes nothing, while another sync holds the experiment.
    """
    name = experiment_name or settings.MLFLOW_EXPERIMENT_NAME
    started = time.monotonic()
    with _leased(name, progress) as sync:
        if sync is None:
            return SyncResult(experiment_name=name, skipped=True)
        return _run(sync, name=name, full=full, started=started, overlap_s=overlap_s)


def runs_refresh(*, run_ids: Iterable[str], experiment_name: str | None = None) -> SyncResult:
    """Read these runs again now, however old, e.g. right after a tag was added to them (feedback): the
    incremental sync only re-reads the overlap window. It is an incremental sync plus these runs, under the
    same lease: a refresh never leaves the mirror less complete than a sync would (mirroring a few labelled
    runs ahead of the others made a report say "2 runs, 2 labelled" until the next sync). Ids MLflow no longer
    has leave the mirror."""
    name = experiment_name or settings.MLFLOW_EXPERIMENT_NAME
    started = time.monotonic()
    with _leased(name, None) as sync:
        if sync is None:
            return SyncResult(experiment_name=name, skipped=True)
        return _run(sync, name=name, full=False, started=started, refresh=sorted(set(run_ids)))


def _refresh(sync: Sync, source: RunSource, experiment_id: str, run_ids: list[str]) -> None:
    """Re-read these runs of the experiment, mirrored or not, wherever they are in time."""
    found = source.runs_get(experiment_id=experiment_id, run_ids=run_ids)
    # Looked up by id alone: SQLite's planner would walk the experiment's index for experiment + ids.
    mirrored_here = {
        run_id for chunk in chunked(run_ids, ids_per_query())
        for run_id, experiment in MirroredRun.objects.filter(run_id__in=chunk).values_list("run_id", "experiment_id")
        if experiment == experiment_id}
    sync.apply(found, gone=mirrored_here - {run.run_id for run in found})


_UNCHANGED = object()


def _finish(sync: Sync, *, name: str, experiment_id: str | None, source, started: float,
            watermark: Any = _UNCHANGED, reconciled: bool = False, position: Any = _UNCHANGED) -> SyncResult:
    """Save the new state and free the lease, in one conditional UPDATE (fails if the lease was lost)."""
    newest = (MirroredRun.objects.filter(experiment_id=experiment_id).order_by("-start_time")
              .values_list("start_time", flat=True).first() if experiment_id is not None else None)
    result = SyncResult(experiment_name=name, experiment_id=experiment_id or "", source=source.kind,
                        days_refreshed=len(sync.rollup_days), reconciled=reconciled,
                        seconds=time.monotonic() - started, **sync.counts)
    now = timezone.now()
    changes: dict[str, Any] = {
        "experiment_id": experiment_id or "", "newest_start_time": newest, "last_finished_at": now,
        "last_succeeded_at": now, "last_error": "", "lease_owner": "", "lease_until": None,
        "last_result": asdict(result) | {"runs_per_s": round(result.runs_per_s, 1)},
    }
    if experiment_id is not None and watermark is not _UNCHANGED:
        changes["watermark_ms"] = watermark
    if position is not _UNCHANGED:
        changes["source_position"] = position
    if reconciled:
        changes["last_reconciled_at"] = now
        changes["mirrored_runs"] = MirroredRun.objects.filter(experiment_id=experiment_id).count()
    if not SyncState.objects.filter(pk=sync.state.pk, lease_owner=sync.owner).update(**changes):
        raise SyncLeaseLost(f"sync of {name!r} lost its lease before it could finish")
    logger.info("Mirror sync: %s", result.summary())
    return result


def _run(sync: Sync, *, name: str, full: bool, started: float, refresh: list[str] = (),
         overlap_s: float | None = None) -> SyncResult:
    state = sync.state
    source = sync.source = run_source_get(attachable=_attachable())
    experiment_id = source.experiment_id_get(name)
    if experiment_id is None:  # MLflow has no such experiment (yet): nothing to mirror
        return _finish(sync, name=name, experiment_id=None, source=source, started=started)
    sync.experiment_id = experiment_id
    if state.experiment_id and state.experiment_id != experiment_id:
        logger.warning("Experiment %r is now id %s (was %s): mirroring it in full", name, experiment_id,
                       state.experiment_id)
        full = True
    if full:
        sync.compare_all = True
        # Every day the mirror or the rollups know of is recomputed, even if no run in it changed.
        sync.dirty |= set(MirroredRun.objects.filter(experiment_id=experiment_id).values_list("day", flat=True)
                          .distinct().order_by())
        sync.dirty |= set(DailyRollup.objects.filter(experiment_id=experiment_id).values_list("day", flat=True)
                          .distinct().order_by())
    overlap_ms = int((settings.ANALYTICS_SYNC_OVERLAP_S if overlap_s is None else overlap_s) * 1000)
    since_ms = None if full or state.watermark_ms is None else state.watermark_ms - overlap_ms
    watermark, active_seen = _read(sync, source, experiment_id, since_ms=since_ms,
                                   watermark=None if full else state.watermark_ms, overlap_ms=overlap_ms)
    if since_ms is not None:
        _unfinished_poll(sync, source, experiment_id, before=_ms_to_datetime(since_ms))
    if refresh:
        _refresh(sync, source, experiment_id, list(refresh))
    reconcile_due = (state.last_reconciled_at is None or timezone.now() - state.last_reconciled_at
                     >= timedelta(seconds=settings.ANALYTICS_RECONCILE_INTERVAL_S))
    if active_seen is not None or reconcile_due:
        _reconcile(sync, source, experiment_id, active_seen)
    sync.rollups_refresh(experiment_id)
    triples_build(experiment_id=experiment_id, renew=sync.renew)
    windows_purge(experiment_id=experiment_id)
    return _finish(sync, name=name, experiment_id=experiment_id, source=source, started=started,
                   watermark=watermark, reconciled=active_seen is not None or reconcile_due,
                   position=source.position or {})


def _read(sync: Sync, source: RunSource, experiment_id: str, *, since_ms: int | None,
          watermark: int | None, overlap_ms: int) -> tuple[int | None, set[str] | None]:
    """Read and write the runs that started at `since_ms` or later (all runs if None), page by page. Returns the
    new watermark and, for a read of every run, the ids of the active runs it saw (else None)."""
    active_seen: set[str] | None = set() if since_ms is None else None
    # A read of every run reads the whole table (no position): runs of frozen days are dropped by `apply`, those of
    # days before the raw-retention horizon that have no rollups yet (a fresh mirror's history) mirrored once.
    position = sync.state.source_position if since_ms is not None else None
    if sync.progress is not None:
        sync.total = source.runs_count(experiment_id=experiment_id, since_ms=since_ms)
    pages = source.runs_read(experiment_id=experiment_id, since_ms=since_ms, page_size=settings.ANALYTICS_SYNC_PAGE_SIZE,
                             position=position, overlap_ms=overlap_ms)
    for page in pages:
        sync.apply(page)
        newest = max(run.start_time for run in page)
        watermark = newest if watermark is None else max(watermark, newest)
        # Pages come in start-time order: the days before this page's last one are complete for this read, so
        # their rollups are recomputed now, a week at a time (small transactions, visible progress).
        sync.rollups_refresh(experiment_id, before=_ms_to_datetime(page[-1].start_time).date(),
                             at_least=ROLLUP_BATCH_DAYS)
        if active_seen is not None:  # the reconcile compares run ids from the horizon on
            active_seen.update(run.run_id for run in page if run.lifecycle == contract.LIFECYCLE_ACTIVE
                               and (sync.horizon_ms is None or run.start_time >= sync.horizon_ms))
    return watermark, active_seen


def _unfinished_poll(sync: Sync, source: RunSource, experiment_id: str, *, before: datetime) -> None:
    """Read again the mirrored runs still running that started before the window read."""
    # Filtered on status alone, so that the status index is the one used (the experiment's indexes would walk
    # all its rows); the handful found are narrowed down here.
    unfinished = [
        run_id for run_id, experiment, start in MirroredRun.objects.filter(
            status__in=contract.UNFINISHED_STATUSES).order_by().values_list("run_id", "experiment_id", "start_time")
        if experiment == experiment_id and start < before]
    if unfinished:
        found = source.runs_get(experiment_id=experiment_id, run_ids=unfinished)
        sync.apply(found, gone=set(unfinished) - {run.run_id for run in found})


def _reconcile(sync: Sync, source, experiment_id: str, active_seen: set[str] | None) -> None:
    """Make the mirror's run-id set MLflow's active one: remove what MLflow lost, fetch what it has."""
    if active_seen is None:
        lifecycles = source.run_ids_list(experiment_id=experiment_id, since_ms=sync.horizon_ms)
        active = {run_id for run_id, lifecycle in lifecycles.items() if lifecycle == contract.LIFECYCLE_ACTIVE}
    else:
        active = active_seen  # a full read just saw (and upserted) every run
    mirrored_rows = MirroredRun.objects.filter(experiment_id=experiment_id)
    if sync.horizon is not None:  # from the raw-retention horizon on, as `active`
        mirrored_rows = mirrored_rows.filter(start_time__gte=_ms_to_datetime(sync.horizon_ms))
    mirrored = set(mirrored_rows.values_list("run_id", flat=True))
    gone = sorted(mirrored - active)
    for chunk in chunked(gone, settings.ANALYTICS_SYNC_PAGE_SIZE):
        sync.apply([], gone=chunk)
    missing = sorted(active - mirrored)
    for chunk in chunked(missing, settings.ANALYTICS_SYNC_PAGE_SIZE):
        sync.apply(source.runs_get(experiment_id=experiment_id, run_ids=chunk))
