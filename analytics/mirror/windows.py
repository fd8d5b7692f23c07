"""Window rollups (`WindowRollup`): 5-minute and hourly buckets per combination of module, role, model and prompt
version, written by the sync beside the daily rollups from the same raw rows it has just read (`rollups.py` calls
in here), and removed once older than their retention. Monitors read them (`analytics.monitors.windows`).

Like the daily rollups they are exact: days the sync recomputes are recomputed here too (delete, insert), and runs
only added are added to their buckets' rows. The tests hold them equal to an aggregation of the raw rows.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import FINE_MINUTES, HOURLY_MINUTES, WindowRollup
from .bulk import rows_upsert
from .sketch import ZERO_KEY, LatencySketch

GRAINS = (FINE_MINUTES, HOURLY_MINUTES)
CONTEXT = ("current_module", "user_role", "model_name", "prompt_version")
KEY = ("experiment_id", "grain_minutes", "bucket", *CONTEXT)
COUNTS = ("runs", "errors", "fallbacks", "out_of_scope", "template_matches", "confidence_count", "latency_count",
          "labelled", "correct")
SUMS = ("confidence_sum", "confidence_sumsq", "latency_sum_ms", "latency_sumsq_ms", "prompt_tokens",
        "completion_tokens", "cost_usd")
FIELDS = (*KEY, "day", *COUNTS, *SUMS, "latency_sketch", "intents", "computed_at")
_INTEGER_SUMS = ("prompt_tokens", "completion_tokens")
_KEY_SPAN = 1 << 16


def retention_cutoff(*, grain: int, now: datetime) -> datetime:
    """Buckets of this grain starting before this are not kept."""
    days = settings.ANALYTICS_FINE_ROLLUP_DAYS if grain == FINE_MINUTES else settings.ANALYTICS_HOURLY_ROLLUP_DAYS
    return now - timedelta(days=days)


def _cells(runs: Any, *, experiment_id: str, now: datetime) -> list[dict[str, Any]]:
    """The window rollup rows (dicts of `WindowRollup` fields) of `runs` (`rollups._Runs`: the raw rows as the daily
    rollups read them), both grains, within retention."""
    import numpy as np
    import pandas as pd

    starts = pd.to_datetime(pd.Index(runs.starts), utc=True, format="ISO8601")
    start = starts[runs.values["start_rank"].to_numpy(dtype=np.int64)]
    context = {name: runs.frame[name].fillna("").astype(str).to_numpy() for name in CONTEXT}
    intents = runs.frame["detected_intent"].fillna("").astype(str).to_numpy()
    cells: list[dict[str, Any]] = []
    for grain in GRAINS:
        keep = np.asarray(start >= retention_cutoff(grain=grain, now=now))
        if not keep.any():
            continue
        buckets = start[keep].floor(f"{grain}min")
        keys = pd.DataFrame({"bucket": buckets.asi8, **{name: values[keep] for name, values in context.items()}})
        group = keys.groupby(list(keys.columns), sort=True).ngroup().to_numpy()
        values = runs.values[keep].reset_index(drop=True)
        totals = values.groupby(group, sort=True)[list(COUNTS + SUMS)].sum()
        firsts = keys.groupby(group, sort=True).first()
        has_bucket, bucket = runs.has_bucket[keep], runs.bucket[keep]
        pairs, counts = np.unique(group[has_bucket] * _KEY_SPAN + bucket[has_bucket], return_counts=True)
        bounds = np.searchsorted(pairs // _KEY_SPAN, np.arange(len(totals) + 1))
        sketch_keys, counts = (pairs % _KEY_SPAN + ZERO_KEY).tolist(), counts.tolist()
        per_intent = pd.Series(1, index=pd.MultiIndex.from_arrays([group, intents[keep]])).groupby(level=[0, 1]).sum()
        intent_counts: dict[int, dict[str, int]] = {}
        for (position, intent), count in per_intent.items():
            intent_counts.setdefault(int(position), {})[intent] = int(count)
        for position, (total, first) in enumerate(zip(totals.itertuples(index=False), firsts.itertuples(index=False),
                                                      strict=True)):
            named, key = total._asdict(), first._asdict()
            moment = pd.Timestamp(key["bucket"], tz="UTC").to_pydatetime()
            low, high = bounds[position], bounds[position + 1]
            cells.append({
                "experiment_id": experiment_id, "grain_minutes": grain, "bucket": moment, "day": moment.date(),
                **{name: key[name] for name in CONTEXT},
                **{name: int(named[name]) for name in COUNTS},
                **{name: int(named[name]) if name in _INTEGER_SUMS else float(named[name]) for name in SUMS},
                "latency_sketch": [sketch_keys[low:high], counts[low:high]] if high > low else [],
                "intents": intent_counts.get(position, {}),
                "computed_at": now,
            })
    return cells


def windows_replace(*, experiment_id: str, days: list[date], runs: Any) -> int:
    """The window rollups of these days, recomputed from their runs (all of the days' runs), in the caller's
    transaction. Returns the rows written."""
    now = timezone.now()
    WindowRollup.objects.filter(experiment_id=experiment_id, day__in=days).delete()
    if max(days) < min(retention_cutoff(grain=grain, now=now) for grain in GRAINS).date():
        return 0  # days older than any retention (a full sync's history): nothing to parse
    cells = [] if runs is None else _cells(runs, experiment_id=experiment_id, now=now)
    rows_upsert(model=WindowRollup, rows=cells, fields=FIELDS)
    return len(cells)


def windows_add(*, experiment_id: str, runs: Any) -> int:
    """Add these runs, new to the mirror, to their buckets' rows (in the caller's transaction)."""
    if runs is None:
        return 0
    now = timezone.now()
    cells = _cells(runs, experiment_id=experiment_id, now=now)
    if not cells:
        return 0
    existing: dict[tuple, dict[str, Any]] = {}
    for grain in GRAINS:
        buckets = sorted({cell["bucket"] for cell in cells if cell["grain_minutes"] == grain})
        if buckets:
            for row in WindowRollup.objects.filter(experiment_id=experiment_id, grain_minutes=grain,
                                                   bucket__in=buckets).values(*FIELDS):
                existing[_key(row)] = row
    merged = [_merged(existing[_key(cell)], cell) if _key(cell) in existing else cell for cell in cells]
    with transaction.atomic():
        rows_upsert(model=WindowRollup, rows=merged, fields=FIELDS, conflict=KEY, update=FIELDS[len(KEY):])
    return len(merged)


def _key(row: dict[str, Any]) -> tuple:
    return tuple(row[name] for name in KEY)


def _merged(row: dict[str, Any], cell: dict[str, Any]) -> dict[str, Any]:
    sketch = LatencySketch.from_stored(row["latency_sketch"])
    sketch.add(LatencySketch.from_stored(cell["latency_sketch"]))
    intents = dict(row["intents"])
    for intent, count in cell["intents"].items():
        intents[intent] = intents.get(intent, 0) + count
    return cell | {name: row[name] + cell[name] for name in (*COUNTS, *SUMS)} | {
        "latency_sketch": sketch.encoded(), "intents": intents}


def windows_purge(*, experiment_id: str, now: datetime | None = None) -> int:
    """Remove the experiment's rows older than their grain's retention; returns how many."""
    now = now or timezone.now()
    removed = 0
    for grain in GRAINS:
        removed += WindowRollup.objects.filter(experiment_id=experiment_id, grain_minutes=grain,
                                               bucket__lt=retention_cutoff(grain=grain, now=now)).delete()[0]
    return removed
