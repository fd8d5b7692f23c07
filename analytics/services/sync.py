"""The sync: keeps `MirroredRun` and `DailyRollup` in step with MLflow, incrementally and exactly once.

MLflow has no "updated since" (runs carry start, end and deleted times only; tags can be added to a
finished run), so one sync:

1. takes the experiment's lease (an atomic conditional UPDATE on its `SyncState` row: one mechanism that
   works on SQLite and PostgreSQL alike), so two syncs of one experiment never overlap;
2. reads the runs that started at or after the watermark minus `ANALYTICS_SYNC_OVERLAP_S`, page by page
   (deleted ones included), and upserts them on `run_id` in bulk; the database compares each incoming
   row with the mirrored one and writes only those that differ; deleted runs leave the mirror. Each
   page commits together with its rollup work (a few new runs are added to their days' rollups; days
   with updates, deletions or many new runs join `dirty_days`) and the lease renewal, so a sync killed
   halfway leaves nothing inconsistent behind;
   With a SQLite store and a SQLite mirror (the `attached` source) the rows are built inside SQLite, runs
   whose digest is unchanged are left out there, and the read starts at the tail of MLflow's runs table;
   a read of every run (the first sync, `full`) has worker threads build the next pages' rows meanwhile;
3. polls again the mirrored runs still RUNNING that started before that window;
4. now and then (`ANALYTICS_RECONCILE_INTERVAL_S`, or with `full`) compares the whole run-id set with
   MLflow's: runs removed by `mlflow gc` or deleted long ago leave, restored or late runs arrive;
5. recomputes the rollups of the dirty days from their raw rows, and advances the watermark.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from intentsite import contract

from ..mlflow_source import (
    INT32,
    AttachedRunSource,
    MirrorColumn,
    MirrorMapping,
    PagesPrepared,
    RunSource,
    SourceRun,
    run_source_get,
)
from ..models import DailyRollup, MirroredRun, SyncState
from ..sketch import sketch_key, sql_key
from .bulk import json_text, rows_upsert, rows_upsert_select, sqlite_utc_datetime
from .rollups import rollups_add, rollups_compute, rollups_refresh, rollups_replace

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Up to this many new runs of a page are added to their days' rollups; more, and the days are recomputed.
ROLLUP_ADD_MAX = 2000
# While a read goes on, completed days are recomputed once this many are due (each recompute has a fixed cost).
ROLLUP_BATCH_DAYS = 7
Progress = Callable[[int, int | None], None]


class SyncLeaseLost(Exception):
    """Another sync took the experiment over (this one outlived its lease): its last page was rolled back."""


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


# --- From an MLflow run to a mirrored row ------------------------------------------------------------

# The contract's names with a typed column (named after them), by source and kind. A value that does not fit its
# column (too long, not a boolean, not an integer) leaves the column empty and stays, as it came, in the JSON
# column: nothing MLflow holds is lost. Names without a column stay in the JSON columns.
def _columns(source: str, *kinds: str) -> tuple[contract.Field, ...]:
    return tuple(field for field in contract.FIELDS if field.column and field.source == source and field.kind in kinds)


TEXT_TAGS = tuple((field.name, field.max_length) for field in _columns(contract.TAG, "text"))
BOOLEAN_TAGS = tuple(field.name for field in _columns(contract.TAG, "boolean"))
TEXT_PARAMS = tuple((field.name, field.max_length) for field in _columns(contract.PARAM, "text"))
BOOLEAN_PARAMS = tuple(field.name for field in _columns(contract.PARAM, "boolean"))
INTEGER_PARAMS = tuple(field.name for field in _columns(contract.PARAM, "integer"))
REAL_METRICS = tuple(field.name for field in _columns(contract.METRIC, "real"))
WHOLE_METRICS = tuple(field.name for field in _columns(contract.METRIC, "whole"))
BOOLEANS = {"true": True, "false": False, "True": True, "False": False}

# What the sync writes and compares (feedback's `expected_intent` / `is_correct` included).
SYNCED_FIELDS = tuple(f.name for f in MirroredRun._meta.concrete_fields if f.name not in {"id", "mirrored_at"})
WRITTEN_FIELDS = (*SYNCED_FIELDS, "mirrored_at")
UPDATE_FIELDS = [name for name in WRITTEN_FIELDS if name != "run_id"]
COMPARED_FIELDS = [name for name in SYNCED_FIELDS if name != "run_id"]
# The attached path compares content only: the digests it computes are saved apart (`page_digests_save`),
# so that a row differing by its digest alone is not rewritten nor counted as updated.
ATTACHED_COMPARED_FIELDS = [name for name in COMPARED_FIELDS if name != "source_digest"]


def _ms_to_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


INTEGER_TEXT = re.compile(r"-?[0-9]{1,10}")
INT32_MIN, INT32_MAX = INT32


def _integer(value: str) -> int | None:
    """An integer param: up to 10 ASCII digits, optionally signed, within the column's 32 bits."""
    if INTEGER_TEXT.fullmatch(value) is None:
        return None
    number = int(value)
    return number if INT32_MIN <= number <= INT32_MAX else None


def _whole(value: float) -> int | None:
    """A metric holding an integer of the column's 32 bits (MLflow stores infinities as ±max float)."""
    return int(value) if math.isfinite(value) and INT32_MIN <= value <= INT32_MAX and value == int(value) else None


# Part of every source digest: bump it when `mirror_row_build` maps runs differently, so that every row
# is compared (and rewritten) once by the next sync. (Mapping the feedback tag and metric into their columns
# did not bump it: a run without feedback maps as before, and a run that gets feedback changes digest.)
# 2: integers are ASCII digits within 32 bits; JSON columns are compact text (as SQLite writes them).
# 3: `answered_by`; latency_bucket is the key of the latency sketch (analytics.sketch).
MAPPING_VERSION = 3
FEEDBACK_BOOLEANS = {1.0: True, 0.0: False}


def source_digest(run: SourceRun) -> str:
    """Digest of everything `mirror_row_build` reads from a run. A mirrored row whose stored digest is the
    run's has nothing new: the sync skips it without building, sending or comparing it (re-reading the
    overlap window then costs little more than the read)."""
    canonical = repr((MAPPING_VERSION, run.experiment_id, run.status, run.lifecycle, run.start_time, run.end_time,
                      sorted(run.tags.items()), sorted(run.params.items()), sorted(run.metrics.items())))
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def mirror_row_build(run: SourceRun, *, digest: str | None = None) -> dict[str, Any]:
    """The mirrored row of one MLflow run, as column values (every synced field). `digest`: the run's
    `source_digest`, if known already."""
    start = EPOCH + timedelta(milliseconds=run.start_time)
    tags, params, metrics = dict(run.tags), dict(run.params), dict(run.metrics)
    row: dict[str, Any] = {
        "source_digest": digest or source_digest(run),
        "run_id": run.run_id, "experiment_id": run.experiment_id, "status": run.status,
        "lifecycle": run.lifecycle, "start_time": start,
        "end_time": None if run.end_time is None else EPOCH + timedelta(milliseconds=run.end_time),
        "day": start.date(),
    }
    for source, texts, booleans in ((tags, TEXT_TAGS, BOOLEAN_TAGS), (params, TEXT_PARAMS, BOOLEAN_PARAMS)):
        for name, max_length in texts:
            value = source.pop(name, "")
            if len(value) > max_length:
                source[name], value = value, ""
            row[name] = value
        for name in booleans:
            value = source.pop(name, None)
            row[name] = None if value is None else BOOLEANS.get(value)
            if value is not None and row[name] is None:
                source[name] = value
    for name in INTEGER_PARAMS:
        value = params.pop(name, None)
        row[name] = None if value is None else _integer(value)
        if value is not None and row[name] is None:
            params[name] = value
    for name in REAL_METRICS:
        value = metrics.pop(name, None)
        row[name] = value if value is None or math.isfinite(value) else None
        if value is not None and row[name] is None:
            metrics[name] = value
    for name in WHOLE_METRICS:
        value = metrics.pop(name, None)
        row[name] = None if value is None else _whole(value)
        if value is not None and row[name] is None:
            metrics[name] = value
    expected = tags.pop(contract.EXPECTED_INTENT, None)
    if expected is not None and len(expected) > contract.BY_NAME[contract.EXPECTED_INTENT].max_length:
        tags[contract.EXPECTED_INTENT], expected = expected, None
    row[contract.EXPECTED_INTENT] = expected
    correct = metrics.pop(contract.IS_CORRECT, None)
    row[contract.IS_CORRECT] = None if correct is None else FEEDBACK_BOOLEANS.get(correct)
    if correct is not None and row[contract.IS_CORRECT] is None:
        metrics[contract.IS_CORRECT] = correct
    status_tag = tags.pop(contract.STATUS, None)
    row["is_error"] = status_tag == contract.STATUS_ERROR or run.status == contract.RUN_FAILED
    if status_tag not in (None, contract.STATUS_ERROR, contract.STATUS_SUCCESS):
        tags[contract.STATUS] = status_tag
    row["tags"] = tags
    row["params"] = params
    # JSON has no NaN: a NaN metric is mirrored as null.
    row["metrics"] = {key: value if math.isfinite(value) else None for key, value in metrics.items()}
    row["latency_bucket"] = sketch_key(row[contract.RESPONSE_TIME_MS])
    return row


# The same mapping, spelled for SQL: the attached path (`AttachedRunSource.mirror_select`) builds rows with it
# inside SQLite. Tests hold the two paths to the same mirror, edge cases included.
SQL_TAGS = (*(MirrorColumn(name, "text", length) for name, length in TEXT_TAGS),
            *(MirrorColumn(name, "boolean") for name in BOOLEAN_TAGS),
            MirrorColumn(contract.EXPECTED_INTENT, "optional_text", contract.BY_NAME[contract.EXPECTED_INTENT].max_length),
            MirrorColumn(contract.STATUS, "status"))
SQL_PARAMS = (*(MirrorColumn(name, "text", length) for name, length in TEXT_PARAMS),
              *(MirrorColumn(name, "boolean") for name in BOOLEAN_PARAMS),
              *(MirrorColumn(name, "integer") for name in INTEGER_PARAMS))
SQL_METRICS = (*(MirrorColumn(name, "real") for name in REAL_METRICS),
               *(MirrorColumn(name, "whole") for name in WHOLE_METRICS),
               MirrorColumn(contract.IS_CORRECT, "feedback"))
SQL_MAPPING = MirrorMapping(tags=SQL_TAGS, params=SQL_PARAMS, metrics=SQL_METRICS, latency_metric=contract.RESPONSE_TIME_MS,
                            latency_key=sql_key, json_text=json_text)


# --- The sync --------------------------------------------------------------------------------------

def _in_chunk() -> int:
    return 900 if connection.vendor == "sqlite" else 10_000


def _as_date(value: date | str) -> date:
    """A date column read with the driver's cursor: a date (Django registers SQLite's converters), or text."""
    return value if isinstance(value, date) else date.fromisoformat(value)


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _attached_upsert(*, expressions: dict[str, str], from_where: str, now: datetime) -> list[tuple]:
    """Upsert the rows SQLite builds with `expressions` (one per synced field) `from_where`, written `now`;
    returns (run id, day, experiment id) of each row inserted or changed."""
    return rows_upsert_select(
        model=MirroredRun, fields=WRITTEN_FIELDS, expressions=expressions | {"mirrored_at": "?"}, from_where=from_where,
        params=[sqlite_utc_datetime(now)], conflict="run_id", update=UPDATE_FIELDS, compare=ATTACHED_COMPARED_FIELDS,
        returning=("run_id", "day", "experiment_id"))


class _Sync:
    """The state of one running sync (one experiment, one lease)."""

    def __init__(self, state: SyncState, owner: str, progress: Progress | None) -> None:
        self.source: RunSource | None = None
        self.state = state
        self.owner = owner
        self.progress = progress
        self.dirty: set[date] = {date.fromisoformat(day) for day in state.dirty_days}
        self.counts = {"runs_read": 0, "added": 0, "updated": 0, "unchanged": 0, "deleted": 0}
        self.done = 0
        self.total: int | None = None
        self.rollup_days: set[date] = set()  # days whose rollups this sync recomputed or added to
        self.compare_all = False  # `full`: every row is compared in the database, digests or not
        self.last_written_at = EPOCH

    def _lease_renew(self, **changes: Any) -> None:
        """Renew the lease and save `changes`, in the caller's transaction; fails if the lease was lost."""
        renewed = SyncState.objects.filter(pk=self.state.pk, lease_owner=self.owner).update(
            lease_until=timezone.now() + timedelta(seconds=settings.ANALYTICS_SYNC_LEASE_S), **changes)
        if not renewed:
            raise SyncLeaseLost(f"sync of {self.state.experiment_name!r} lost its lease")

    def _mirrored(self, run_ids: list[str]) -> dict[str, tuple[date, str]]:
        """The mirrored rows among these run ids: run id -> (day, source digest)."""
        found: dict[str, tuple[date, str]] = {}
        for chunk in _chunks(run_ids, _in_chunk()):
            for run_id, day, digest in MirroredRun.objects.filter(run_id__in=chunk).values_list(
                    "run_id", "day", "source_digest"):
                found[run_id] = (day, digest)
        return found

    def apply(self, runs: list[SourceRun], *, gone: Iterable[str] = (), prepared: str | None = None) -> None:
        """Upsert the active runs, remove deleted ones and the `gone` ids, in one transaction.

        The upsert compares every synced column of an existing row with the incoming one (in the
        database, NULL-safe) and rewrites only rows that differ: re-reading the overlap window costs a
        comparison, not a write. Added = rows that were not mirrored; updated = rows written minus added.
        `prepared`: a table holding the rows of these runs, built ahead (`PagesPrepared`; attached path)."""
        if isinstance(self.source, AttachedRunSource):
            return self._apply_attached(runs, gone=gone, prepared=prepared)
        active = [run for run in runs if run.lifecycle == contract.LIFECYCLE_ACTIVE]
        removed = {run.run_id for run in runs if run.lifecycle != contract.LIFECYCLE_ACTIVE} | set(gone)
        found = self._mirrored([run.run_id for run in active] + sorted(removed))
        mirrored = {run_id: day for run_id, (day, _) in found.items()}
        digests = {run.run_id: source_digest(run) for run in active}
        if not self.compare_all:  # runs whose mirrored row was built from this very content: nothing to do
            fresh = [run for run in active if run.run_id not in found or found[run.run_id][1] != digests[run.run_id]]
            self.counts["unchanged"] += len(active) - len(fresh)
            active = fresh
        rows = [mirror_row_build(run, digest=digests[run.run_id]) for run in active]
        # A time no other write of this sync has: the rollups find the rows added here by it.
        now = max(timezone.now(), self.last_written_at + timedelta(microseconds=1))
        self.last_written_at = now
        for row in rows:
            row["mirrored_at"] = now
        added = {row["run_id"]: row["day"] for row in rows if row["run_id"] not in mirrored}
        removed_ids = sorted(run_id for run_id in removed if run_id in mirrored)
        with transaction.atomic():
            written = rows_upsert(model=MirroredRun, rows=rows, fields=WRITTEN_FIELDS, conflict="run_id",
                                  update=UPDATE_FIELDS, compare=COMPARED_FIELDS)
            updated = written - len(added)
            # Which rows changed is not known, only how many: their days (old and new) are among these.
            changed = {row["day"] for row in rows if row["run_id"] in mirrored} | {
                mirrored[row["run_id"]] for row in rows if row["run_id"] in mirrored} if updated else set()
            self._page_commit(experiment_id=rows[0]["experiment_id"] if rows else "", added=added,
                              changed_days=changed, removed_ids=removed_ids, mirrored=mirrored, runs_read=len(runs))
        self._page_count(runs_read=len(runs), added=len(added), updated=updated,
                         unchanged=len(rows) - len(added) - updated, deleted=len(removed_ids))

    def _apply_attached(self, runs: list[SourceRun], *, gone: Iterable[str], prepared: str | None) -> None:
        """`apply` with rows built inside SQLite from the attached store: one INSERT ... SELECT ... ON CONFLICT
        ... RETURNING per page, which also says exactly which rows it inserted or changed."""
        active = [run.run_id for run in runs if run.lifecycle == contract.LIFECYCLE_ACTIVE]
        removed = {run.run_id for run in runs if run.lifecycle != contract.LIFECYCLE_ACTIVE} | set(gone)
        now = max(timezone.now(), self.last_written_at + timedelta(microseconds=1))
        self.last_written_at = now
        with transaction.atomic():
            mirrored = {run_id: day for run_id, (day, _) in self._mirrored(sorted(removed)).items()}
            removed_ids = sorted(run_id for run_id in removed if run_id in mirrored)
            written: list[tuple] = []
            if active:
                table = connection.ops.quote_name(MirroredRun._meta.db_table)
                connection.ensure_connection()
                cursor = connection.connection.cursor()  # the driver's own: the SQL is SQLite's
                try:
                    if prepared is not None:
                        # The page's runs mirrored already, found through the page's table (one join).
                        found = cursor.execute(f"SELECT m.run_id, m.day FROM {prepared} AS s CROSS JOIN {table} "
                                               "AS m ON m.run_id = s.run_id").fetchall()
                        if found and not self.compare_all:  # rows read again: digests decide, on a read made here
                            prepared = None
                    if prepared is None:
                        written, found = self._attached_rows_write(cursor=cursor, table=table, active=active, now=now)
                    else:
                        quote = connection.ops.quote_name  # (WHERE: else SQLite reads ON CONFLICT as a join's ON)
                        written = _attached_upsert(expressions={name: f"s.{quote(name)}" for name in SYNCED_FIELDS},
                                                   from_where=f"FROM {prepared} AS s WHERE true", now=now)
                    mirrored.update((run_id, _as_date(day)) for run_id, day in found)
                finally:
                    cursor.close()
            written = [(run_id, _as_date(day), experiment) for run_id, day, experiment in written]
            added = {run_id: day for run_id, day, _ in written if run_id not in mirrored}
            changed = {day for run_id, day, _ in written if run_id in mirrored} | {
                mirrored[run_id] for run_id, _, _ in written if run_id in mirrored}
            self._page_commit(experiment_id=written[0][2] if written else "", added=added, changed_days=changed,
                              removed_ids=removed_ids, mirrored=mirrored, runs_read=len(runs))
        self._page_count(runs_read=len(runs), added=len(added), updated=len(written) - len(added),
                         unchanged=len(active) - len(written), deleted=len(removed_ids))

    def _attached_rows_write(self, *, cursor, table: str, active: list[str], now: datetime) -> tuple[list[tuple], list[tuple]]:
        """Read the page's runs from the attached store and upsert their rows, on the mirror's connection.
        Returns the rows written (run id, day, experiment id) and the page's runs mirrored before (run id, day)."""
        source: AttachedRunSource = self.source
        source.page_load(cursor=cursor, run_ids=active)
        # The page's runs mirrored already, found through the page's table (one join).
        found = cursor.execute(f"SELECT m.run_id, m.day FROM {source.PAGE_TABLE} AS p CROSS JOIN {table} "
                               "AS m ON m.run_id = p.run_uuid").fetchall()
        # Runs mirrored from this very content are left out. Digests only matter for rows read again (the
        # overlap window): a page of new runs, or a full sync, does without them.
        digests = bool(found) and not self.compare_all
        if digests:
            source.page_digest(cursor=cursor, version=MAPPING_VERSION)
            source.page_drop_unchanged(cursor=cursor, mirror_table=table)
        select = source.mirror_select(cursor=cursor, mapping=SQL_MAPPING)
        written = _attached_upsert(expressions=select.expressions, from_where=select.from_where, now=now)
        if digests:
            source.page_digests_save(cursor=cursor, mirror_table=table)
        return written, found

    def _page_commit(self, *, experiment_id: str, added: dict[str, date], changed_days: set[date],
                     removed_ids: list[str], mirrored: dict[str, date], runs_read: int) -> None:
        """The rest of a page's transaction, once its rows are written (`added`: run id -> day of the rows
        inserted; `changed_days`: days of rows updated): remove the deleted runs, bring the rollups along,
        renew the lease with the new state."""
        for chunk in _chunks(removed_ids, _in_chunk()):
            MirroredRun.objects.filter(run_id__in=chunk).delete()
        recompute = {mirrored[run_id] for run_id in removed_ids} | changed_days
        new_days = set(added.values())
        # Days that only gained runs take them in by addition when they are few (today, in the
        # steady state); the other touched days are recomputed from their rows.
        add_days = new_days - recompute - self.dirty
        if add_days and len(added) <= ROLLUP_ADD_MAX:
            rollups_add(experiment_id=experiment_id, days=add_days,
                        run_ids=[run_id for run_id, day in added.items() if day in add_days])
            self.rollup_days |= add_days
        else:
            recompute |= new_days
        self.dirty |= recompute
        self._lease_renew(dirty_days=sorted(day.isoformat() for day in self.dirty),
                          mirrored_runs=F("mirrored_runs") + len(added) - len(removed_ids),
                          runs_seen=F("runs_seen") + runs_read)

    def _page_count(self, *, runs_read: int, **counts: int) -> None:
        self.counts["runs_read"] += runs_read
        for name, count in counts.items():
            self.counts[name] += count
        self.done += runs_read
        if self.progress is not None:
            self.progress(self.done, self.total)

    def rollups_refresh(self, experiment_id: str, *, before: date | None = None, at_least: int = 1) -> int:
        """Recompute the dirty days (those `before` a day, if given; none while fewer than `at_least` are due),
        a month per transaction; each day leaves `dirty_days` in the transaction that recomputes it."""
        done = 0
        due = sorted(day for day in self.dirty if before is None or day < before)
        if len(due) < at_least:
            return 0
        for chunk in _chunks(due, 31):
            with transaction.atomic():
                rollups_refresh(experiment_id=experiment_id, days=chunk)
                self._rollups_done(chunk)
            done += len(chunk)
        return done

    def _rollups_done(self, days: list[date]) -> None:
        """In the transaction that wrote their rollups: the days leave `dirty_days`."""
        self.dirty -= set(days)
        self._lease_renew(dirty_days=sorted(day.isoformat() for day in self.dirty))
        self.rollup_days |= set(days)


class _RollupsAhead:
    """The rollups of a long read's completed days, computed in a thread while the read goes on (a full read
    through `PagesPrepared`): the thread reads the days' committed rows on its own connection, and the sync
    writes the cells between two pages. Pages come in start-time order, so the read no longer touches those
    days; what comes after it (runs polled again, the reconcile) does, once every cell is written (`drain`)."""

    def __init__(self, sync: _Sync, experiment_id: str) -> None:
        self.sync, self.experiment_id = sync, experiment_id
        self.pending: deque[tuple[list[date], Future]] = deque()
        self.executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> _RollupsAhead:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirror-rollups")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _compute(experiment_id: str, days: list[date]) -> list[dict[str, Any]]:
        try:
            return rollups_compute(experiment_id=experiment_id, days=days)
        finally:
            connection.close()  # this thread's own

    def step(self, *, before: date) -> None:
        """Write the cells computed so far; start on the dirty days before `before` once enough are due."""
        while self.pending and self.pending[0][1].done():
            self._write()
        started = {day for days, _ in self.pending for day in days}
        due = sorted(day for day in self.sync.dirty if day < before and day not in started)
        if len(due) >= ROLLUP_BATCH_DAYS:
            self.pending.append((due, self.executor.submit(self._compute, self.experiment_id, due)))

    def drain(self) -> None:
        while self.pending:
            self._write()

    def _write(self) -> None:
        days, future = self.pending.popleft()
        cells = future.result()
        with transaction.atomic():
            rollups_replace(experiment_id=self.experiment_id, days=days, cells=cells)
            self.sync._rollups_done(days)


def _lease_take(state: SyncState, owner: str) -> bool:
    now = timezone.now()
    return bool(
        SyncState.objects.filter(pk=state.pk)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_owner=owner, lease_until=now + timedelta(seconds=settings.ANALYTICS_SYNC_LEASE_S),
                last_started_at=now)
    )


@contextmanager
def _leased(name: str, progress: Progress | None) -> Iterator[_Sync | None]:
    """The experiment's sync, under its lease; None while another sync holds it. A failure is recorded
    on the state and frees the lease; success frees it in `_finish`, with the new state."""
    state, _ = SyncState.objects.get_or_create(experiment_name=name)
    owner = uuid.uuid4().hex
    if not _lease_take(state, owner):
        logger.info("Mirror sync of %r skipped: another sync holds it", name)
        yield None
        return
    state.refresh_from_db()
    try:
        yield _Sync(state, owner, progress)
    except Exception as exc:
        SyncState.objects.filter(pk=state.pk, lease_owner=owner).update(
            last_error=f"{type(exc).__name__}: {exc}"[:4000], last_finished_at=timezone.now(),
            lease_owner="", lease_until=None)
        raise


def runs_sync(*, experiment_name: str | None = None, full: bool = False, progress: Progress | None = None) -> SyncResult:
    """Bring the mirror of one experiment up to date with MLflow (see the module's docstring).

    `full` reads every run (not only the window behind the watermark), reconciles the run-id set and
    recomputes every rollup. `progress(done, total)` is called after each page (total may be None).
    Returns a `SyncResult` with `skipped=True`, and changes nothing, while another sync holds the experiment.
    """
    name = experiment_name or settings.MLFLOW_EXPERIMENT_NAME
    started = time.monotonic()
    with _leased(name, progress) as sync:
        if sync is None:
            return SyncResult(experiment_name=name, skipped=True)
        return _run(sync, name=name, full=full, started=started)


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


def _refresh(sync: _Sync, source: RunSource, experiment_id: str, run_ids: list[str]) -> None:
    """Re-read these runs of the experiment, mirrored or not, wherever they are in time."""
    found = source.runs_get(experiment_id=experiment_id, run_ids=run_ids)
    # Looked up by id alone: SQLite's planner would walk the experiment's index for experiment + ids.
    mirrored_here = {
        run_id for chunk in _chunks(run_ids, _in_chunk())
        for run_id, experiment in MirroredRun.objects.filter(run_id__in=chunk).values_list("run_id", "experiment_id")
        if experiment == experiment_id}
    sync.apply(found, gone=mirrored_here - {run.run_id for run in found})


_UNCHANGED = object()


def _finish(sync: _Sync, *, name: str, experiment_id: str | None, source, started: float,
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


def _run(sync: _Sync, *, name: str, full: bool, started: float, refresh: list[str] = ()) -> SyncResult:
    state = sync.state
    source = sync.source = run_source_get()
    experiment_id = source.experiment_id_get(name)
    if experiment_id is None:  # MLflow has no such experiment (yet): nothing to mirror
        return _finish(sync, name=name, experiment_id=None, source=source, started=started)
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
    since_ms = None if full or state.watermark_ms is None else (
        state.watermark_ms - int(settings.ANALYTICS_SYNC_OVERLAP_S * 1000))
    watermark = None if full else state.watermark_ms
    if sync.progress is not None:
        sync.total = source.runs_count(experiment_id=experiment_id, since_ms=since_ms)
    active_seen: set[str] | None = set() if since_ms is None else None
    overlap_ms = int(settings.ANALYTICS_SYNC_OVERLAP_S * 1000)
    pages = source.runs_read(experiment_id=experiment_id, since_ms=since_ms, page_size=settings.ANALYTICS_SYNC_PAGE_SIZE,
                             position=state.source_position, overlap_ms=overlap_ms)
    # A read of every run from a store attached to the mirror: the pages' rows are built ahead, by worker threads,
    # while the page at hand is written (`PagesPrepared`). An incremental read (a page or two) does without.
    workers = settings.ANALYTICS_SYNC_WORKERS
    ahead = isinstance(source, AttachedRunSource) and since_ms is None and workers > 0
    prepared = (PagesPrepared(source, pages, mapping=SQL_MAPPING, columns=SYNCED_FIELDS, workers=workers) if ahead
                else nullcontext((page, None) for page in pages))
    # (Their rollups too, by a thread with its own connection: to the same database, unless that is in memory.)
    threaded = ahead and not connection.is_in_memory_db()
    with prepared as read, (_RollupsAhead(sync, experiment_id) if threaded else nullcontext()) as rollups:
        for page, table in read:
            sync.apply(page, prepared=table)
            newest = max(run.start_time for run in page)
            watermark = newest if watermark is None else max(watermark, newest)
            # Pages come in start-time order: the days before this page's last one are complete for this
            # read, so their rollups are recomputed now, a week at a time (small transactions, visible progress).
            before = _ms_to_datetime(page[-1].start_time).date()
            if rollups is not None:
                rollups.step(before=before)
            else:
                sync.rollups_refresh(experiment_id, before=before, at_least=ROLLUP_BATCH_DAYS)
            if active_seen is not None:
                active_seen.update(run.run_id for run in page if run.lifecycle == contract.LIFECYCLE_ACTIVE)
        if rollups is not None:
            rollups.drain()

    if since_ms is not None:  # runs still running that started before the window
        # Filtered on status alone, so that the status index is the one used (the experiment's indexes
        # would walk all its rows); the handful found are narrowed down here.
        window_start = _ms_to_datetime(since_ms)
        unfinished = [
            run_id for run_id, experiment, start in MirroredRun.objects.filter(
                status__in=contract.UNFINISHED_STATUSES).order_by().values_list("run_id", "experiment_id", "start_time")
            if experiment == experiment_id and start < window_start]
        if unfinished:
            found = source.runs_get(experiment_id=experiment_id, run_ids=unfinished)
            sync.apply(found, gone=set(unfinished) - {run.run_id for run in found})

    if refresh:
        _refresh(sync, source, experiment_id, list(refresh))

    reconcile_due = (state.last_reconciled_at is None or timezone.now() - state.last_reconciled_at
                     >= timedelta(seconds=settings.ANALYTICS_RECONCILE_INTERVAL_S))
    if active_seen is not None or reconcile_due:
        _reconcile(sync, source, experiment_id, active_seen)
    sync.rollups_refresh(experiment_id)
    return _finish(sync, name=name, experiment_id=experiment_id, source=source, started=started,
                   watermark=watermark, reconciled=active_seen is not None or reconcile_due,
                   position=source.position or {})


def _reconcile(sync: _Sync, source, experiment_id: str, active_seen: set[str] | None) -> None:
    """Make the mirror's run-id set MLflow's active one: remove what MLflow lost, fetch what it has."""
    if active_seen is None:
        lifecycles = source.run_ids_list(experiment_id=experiment_id)
        active = {run_id for run_id, lifecycle in lifecycles.items() if lifecycle == contract.LIFECYCLE_ACTIVE}
    else:
        active = active_seen  # a full read just saw (and upserted) every run
    mirrored = set(MirroredRun.objects.filter(experiment_id=experiment_id).values_list("run_id", flat=True))
    gone = sorted(mirrored - active)
    for chunk in _chunks(gone, settings.ANALYTICS_SYNC_PAGE_SIZE):
        sync.apply([], gone=chunk)
    missing = sorted(active - mirrored)
    for chunk in _chunks(missing, settings.ANALYTICS_SYNC_PAGE_SIZE):
        sync.apply(source.runs_get(experiment_id=experiment_id, run_ids=chunk))
