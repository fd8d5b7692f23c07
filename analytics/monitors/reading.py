"""Reading the window rollups that a set of windows needs (`rows_read`), with a per-process cache of buckets.

Beat evaluates the monitors every minute over the same weeks of hourly rows, nearly all unchanged since the last
evaluation. Each bucket (one grain, one start) is kept prepared (`windows.Block`: arrays, sketches and intents
parsed) with its version, the bucket's row count and newest `computed_at`: a read asks the database for the versions
of the buckets in its spans (one grouped query a grain, on the rollups' index) and fetches and parses only those
that changed or are new. A bucket rewritten by the sync (runs added, a day recomputed) changes its version. Buckets
no read asked for are dropped, so the cache holds at most what the latest evaluation read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import datetime

import numpy as np
from django.db import connection
from django.db.models import CharField, Count, Max, Q, TextField
from django.db.models.functions import Cast

from ..mirror.windows import CONTEXT
from ..models import FINE_MINUTES, HOURLY_MINUTES, WindowRollup
from .windows import NUMBERS, Block, Rows, parts

# (experiment id, grain, bucket ns) -> (version, block)
_cache: dict[tuple[str, int, int], tuple[tuple, Block]] = {}
_lock = threading.Lock()
_FETCH_CHUNK = 400  # buckets per query when only some are fetched


def rows_read(*, experiment_id: str, windows: Iterable[tuple[datetime, datetime]], dense: bool = False) -> Rows:
    """Every window rollup row that any of these windows needs (their whole hours' hourly rows, their edges' 5-minute
    rows); `dense`: rows of both grains over all of the windows' span (for any window inside it: a preview's steps)."""
    hours: list[tuple[datetime, datetime]] = []
    fine: list[tuple[datetime, datetime]] = []
    for start, end in windows:
        if dense:
            hours.append((start, end))
            fine.append((start, end))
            continue
        whole, edges = parts(start, end)
        if whole is not None:
            hours.append(whole)
        fine.extend(edges)
    blocks: list[Block] = []
    wanted: set[tuple[str, int, int]] = set()
    for grain, spans in ((HOURLY_MINUTES, _merged(hours)), (FINE_MINUTES, _merged(fine))):
        if not spans:
            continue
        within = Q()
        for low, high in spans:
            within |= Q(bucket__gte=low, bucket__lt=high)
        rows = WindowRollup.objects.filter(within, experiment_id=experiment_id, grain_minutes=grain).order_by()
        versions = _versions(rows)
        with _lock:
            cached = {bucket: _cache.get((experiment_id, grain, bucket)) for bucket in versions}
        stale = [bucket for bucket, version in versions.items()
                 if cached[bucket] is None or cached[bucket][0] != version]
        fresh = _blocks_fetch(rows, grain=grain, buckets=stale, everything=len(stale) == len(versions))
        with _lock:
            for bucket, block in fresh.items():
                if not dense:  # a preview's weeks of 5-minute rows are read once: not kept
                    _cache[(experiment_id, grain, bucket)] = (versions[bucket], block)
                cached[bucket] = (versions[bucket], block)
        blocks.extend(entry[1] for entry in cached.values() if entry is not None)
        wanted.update((experiment_id, grain, bucket) for bucket in versions)
    if not dense:
        with _lock:
            for key in [key for key in _cache if key not in wanted]:
                del _cache[key]
    return Rows(blocks)


def cache_clear() -> None:
    with _lock:
        _cache.clear()


def _versions(rows) -> dict[int, tuple]:
    """bucket (ns) -> (rows, newest computed_at as text), one grouped query."""
    import pandas as pd

    grouped = list(rows.annotate(bucket_text=Cast("bucket", CharField())).values("bucket_text")
                   .annotate(n=Count("id"), newest=Cast(Max("computed_at"), CharField()))
                   .values_list("bucket_text", "n", "newest"))
    if not grouped:
        return {}
    buckets = pd.to_datetime(pd.Index([row[0] for row in grouped]), utc=True, format="ISO8601").asi8.tolist()
    return {bucket: (row[1], row[2]) for bucket, row in zip(buckets, grouped, strict=True)}


def _blocks_fetch(rows, *, grain: int, buckets: list[int], everything: bool) -> dict[int, Block]:
    """The blocks of these buckets, read with the driver's values (bucket and JSON as text: converted in bulk)."""
    import pandas as pd

    if not buckets:
        return {}
    names = ("bucket_text", *CONTEXT, *NUMBERS, "latency_sketch", "intents_text")
    annotated = rows.annotate(bucket_text=Cast("bucket", CharField()), intents_text=Cast("intents", TextField()))
    fetched: list[tuple] = []
    chunks = [None] if everything else [buckets[i:i + _FETCH_CHUNK] for i in range(0, len(buckets), _FETCH_CHUNK)]
    for chunk in chunks:
        query = annotated if chunk is None else annotated.filter(
            bucket__in=pd.to_datetime(np.asarray(chunk, dtype=np.int64), utc=True).to_pydatetime().tolist())
        sql, params = query.values_list(*names).query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            fetched.extend(cursor.fetchall())
    if not fetched:
        return {}
    starts = pd.to_datetime(pd.Index([row[0] for row in fetched]), utc=True, format="ISO8601").asi8.tolist()
    # Every row's intents in one parse (one C call, not one a row); the sketches are read as they are stored.
    sketches = [row[-2] for row in fetched]
    intents = json.loads("[" + ",".join(row[-1] or "null" for row in fetched) + "]")
    grouped: dict[int, list[int]] = {}
    for position, bucket in enumerate(starts):
        grouped.setdefault(bucket, []).append(position)
    return {bucket: Block.of(grain, bucket, [fetched[i][1:-2] for i in positions], [sketches[i] for i in positions],
                             [intents[i] for i in positions])
            for bucket, positions in grouped.items()}


def _merged(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Overlapping or touching spans as one (a long history reads as one range, not hundreds)."""
    result: list[list[datetime]] = []
    for low, high in sorted(spans):
        if result and low <= result[-1][1]:
            result[-1][1] = max(result[-1][1], high)
        else:
            result.append([low, high])
    return [(low, high) for low, high in result]
