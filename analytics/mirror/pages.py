"""One running sync of one experiment (`Sync`): its lease, and the pages of runs it writes into the mirror, each in
one transaction with its rollup work and the lease's renewal, so a sync killed halfway leaves nothing inconsistent.

A page's active runs are upserted on `run_id` in bulk: the database compares each incoming row with the mirrored
one and writes only those that differ; deleted runs leave the mirror. A few new runs are added to their days'
rollups; days with updates, deletions or many new runs join `dirty_days`, recomputed in batches. With the attached
source the rows are built inside SQLite and runs whose digest is unchanged are left out there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from intentsite import contract

from ..models import MirroredRun, SyncState
from .bulk import chunked, ids_per_query, rows_upsert, rows_upsert_select, sqlite_utc_datetime
from .mapping import (
    ATTACHED_COMPARED_FIELDS,
    COMPARED_FIELDS,
    MAPPING_VERSION,
    UPDATE_FIELDS,
    WRITTEN_FIELDS,
    attached_select,
    mirror_row_build,
    source_digest,
)
from .retention import frozen_days, raw_horizon, raw_horizon_ms
from .rollups import rollups_add, rollups_refresh
from .sources import RunSource
from .sources.attached import AttachedRunSource
from .sources.base import SourceRun

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Up to this many new runs of a page are added to their days' rollups; more, and the days are recomputed.
ROLLUP_ADD_MAX = 2000
Progress = Callable[[int, int | None], None]


class SyncLeaseLost(Exception):
    """Another sync took the experiment over (this one outlived its lease): its last page was rolled back."""


def _as_date(value: date | str) -> date:
    """A date column read with the driver's cursor: a date (Django registers SQLite's converters), or text."""
    return value if isinstance(value, date) else date.fromisoformat(value)


def _attached_upsert(*, expressions: dict[str, str], from_where: str, now: datetime) -> list[tuple]:
    """Upsert the rows SQLite builds with `expressions` (one per synced field) `from_where`, written `now`;
    returns (run id, day, experiment id) of each row inserted or changed."""
    return rows_upsert_select(
        model=MirroredRun, fields=WRITTEN_FIELDS, expressions=expressions | {"mirrored_at": "?"}, from_where=from_where,
        params=[sqlite_utc_datetime(now)], conflict="run_id", update=UPDATE_FIELDS, compare=ATTACHED_COMPARED_FIELDS,
        returning=("run_id", "day", "experiment_id"))


def _page_drop_unchanged(*, cursor, page_table: str, mirror_table: str) -> int:
    """Leave out of the attached source's page the runs whose mirrored row has the page's digest; returns how many."""
    cursor.execute(f"DELETE FROM {page_table} AS p WHERE digest = (SELECT m.source_digest FROM {mirror_table} "
                   "AS m WHERE m.run_id = p.run_uuid)")
    return cursor.rowcount


def _page_digests_save(*, cursor, page_table: str, mirror_table: str) -> None:
    """Give the mirrored rows of the page the page's digests (rows the upsert found equal kept theirs)."""
    digest = f"(SELECT p.digest FROM {page_table} AS p WHERE p.run_uuid = m.run_id)"
    # Driven by the page's ids (the unique run_id index), not by a scan of the mirror.
    cursor.execute(f"UPDATE {mirror_table} AS m SET source_digest = {digest} WHERE m.run_id IN (SELECT run_uuid "
                   f"FROM {page_table} WHERE digest IS NOT NULL) AND m.source_digest IS NOT {digest}")


class Sync:
    """One running sync of one experiment: its lease, its counts, and the pages it writes."""

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
        # The raw-retention horizon (`retention`; None: none). A day before it that has rollups is frozen: its runs
        # are neither written nor removed, its rollups never recomputed. A day before it without rollups (history a
        # fresh mirror meets) is mirrored once, and frozen from then on.
        self.horizon = raw_horizon()
        self.horizon_ms = raw_horizon_ms()
        self.experiment_id = ""  # set by the sync once it knows it
        self._frozen: set[date] | None = None

    def frozen(self, day: date) -> bool:
        if self.horizon is None or day >= self.horizon:
            return False
        if self._frozen is None:
            self._frozen = frozen_days(experiment_id=self.experiment_id, horizon=self.horizon)
        return day in self._frozen

    def _lease_renew(self, **changes: Any) -> None:
        """Renew the lease and save `changes`, in the caller's transaction; fails if the lease was lost."""
        renewed = SyncState.objects.filter(pk=self.state.pk, lease_owner=self.owner).update(
            lease_until=timezone.now() + timedelta(seconds=settings.ANALYTICS_SYNC_LEASE_S), **changes)
        if not renewed:
            raise SyncLeaseLost(f"sync of {self.state.experiment_name!r} lost its lease")

    def renew(self) -> None:
        """Renew the lease (a long step of the sync, between its transactions)."""
        self._lease_renew()

    def _mirrored(self, run_ids: list[str]) -> dict[str, tuple[date, str]]:
        """The mirrored rows among these run ids: run id -> (day, source digest)."""
        found: dict[str, tuple[date, str]] = {}
        for chunk in chunked(run_ids, ids_per_query()):
            for run_id, day, digest in MirroredRun.objects.filter(run_id__in=chunk).values_list(
                    "run_id", "day", "source_digest"):
                found[run_id] = (day, digest)
        return found

    def apply(self, runs: list[SourceRun], *, gone: Iterable[str] = ()) -> None:
        """Upsert the active runs, remove deleted ones and the `gone` ids, in one transaction.

        The upsert compares every synced column of an existing row with the incoming one (in the
        database, NULL-safe) and rewrites only rows that differ: re-reading the overlap window costs a
        comparison, not a write. Added = rows that were not mirrored; updated = rows written minus added."""
        if self.horizon_ms is not None:
            runs = [run for run in runs if run.start_time >= self.horizon_ms
                    or not self.frozen((EPOCH + timedelta(milliseconds=run.start_time)).date())]
        if isinstance(self.source, AttachedRunSource):
            return self._apply_attached(runs, gone=gone)
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

    def _apply_attached(self, runs: list[SourceRun], *, gone: Iterable[str]) -> None:
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
                    written, found = self._attached_rows_write(cursor=cursor, table=table, active=active, now=now)
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
            _page_drop_unchanged(cursor=cursor, page_table=source.PAGE_TABLE, mirror_table=table)
        select = attached_select(source=source, cursor=cursor)
        written = _attached_upsert(expressions=select.expressions, from_where=select.from_where, now=now)
        if digests:
            _page_digests_save(cursor=cursor, page_table=source.PAGE_TABLE, mirror_table=table)
        return written, found

    def _page_commit(self, *, experiment_id: str, added: dict[str, date], changed_days: set[date],
                     removed_ids: list[str], mirrored: dict[str, date], runs_read: int) -> None:
        """The rest of a page's transaction, once its rows are written (`added`: run id -> day of the rows
        inserted; `changed_days`: days of rows updated): remove the deleted runs, bring the rollups along,
        renew the lease with the new state."""
        for chunk in chunked(removed_ids, ids_per_query()):
            MirroredRun.objects.filter(run_id__in=chunk).delete()
        recompute = {mirrored[run_id] for run_id in removed_ids} | changed_days
        # a row of a frozen day that left (a deleted run) leaves its rollups as they are
        recompute = {day for day in recompute if not self.frozen(day)}
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
        if any(self.frozen(day) for day in self.dirty):
            self.dirty = {day for day in self.dirty if not self.frozen(day)}  # their rollups stay as they are
            self._lease_renew(dirty_days=sorted(day.isoformat() for day in self.dirty))
        due = sorted(day for day in self.dirty if before is None or day < before)
        if len(due) < at_least:
            return 0
        for chunk in chunked(due, 31):
            with transaction.atomic():
                rollups_refresh(experiment_id=experiment_id, days=chunk)
                self._rollups_done(chunk)
            done += len(chunk)
        if self.horizon is not None and any(day < self.horizon for day in due):
            self._frozen = None  # days before the horizon that have rollups now are frozen from now on
        return done

    def _rollups_done(self, days: list[date]) -> None:
        """In the transaction that wrote their rollups: the days leave `dirty_days`."""
        self.dirty -= set(days)
        self._lease_renew(dirty_days=sorted(day.isoformat() for day in self.dirty))
        self.rollup_days |= set(days)
