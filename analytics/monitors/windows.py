"""Any window and filter of the recent traffic, from the window rollups read once (`WindowRollup`).

A window [start, end) (both on 5-minute boundaries) is the hourly rows of the whole hours inside it and the
5-minute rows of its partial hours at either end; hourly rows keep ANALYTICS_HOURLY_ROLLUP_DAYS, 5-minute ones
ANALYTICS_FINE_ROLLUP_DAYS (more than the longest window). `rows_read` reads, in two queries, every row any of a set
of windows needs; `Rows.aggregate` sums the rows of one window and filter with numpy (no query): one read serves
all monitors of an evaluation, all windows of an anomaly's history, every step of a preview.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import CharField, Q, TextField
from django.db.models.functions import Cast

from ..mirror.sketch import LatencySketch
from ..mirror.windows import CONTEXT, COUNTS, SUMS
from ..models import FINE_MINUTES, HOURLY_MINUTES, WindowRollup

HOUR = timedelta(minutes=HOURLY_MINUTES)
STEP = timedelta(minutes=FINE_MINUTES)
# A monitor's filter names (the API's) -> the rollup's columns.
FILTER_COLUMNS = {"module": "current_module", "user_role": "user_role", "model_name": "model_name",
                  "prompt_version": "prompt_version"}
_NUMBERS = (*COUNTS, *SUMS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_step(moment: datetime) -> datetime:
    return moment - timedelta(minutes=moment.minute % FINE_MINUTES, seconds=moment.second,
                              microseconds=moment.microsecond)


def window_end(now: datetime) -> datetime:
    """The end of a window evaluated at `now`: the end of the 5-minute bucket `now` is in (it counts in full)."""
    return floor_step(now) + STEP


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(moment: datetime) -> datetime:
    floored = _floor_hour(moment)
    return floored if floored == moment else floored + HOUR


def _parts(start: datetime, end: datetime) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
    """[start, end) as the span of its whole hours (or None) and the spans of 5-minute buckets at its edges."""
    whole_start, whole_end = _ceil_hour(start), _floor_hour(end)
    if whole_start >= whole_end:
        return None, [(start, end)]
    edges = [(start, whole_start)] if start < whole_start else []
    if whole_end < end:
        edges.append((whole_end, end))
    return (whole_start, whole_end), edges


def _ns(moment: datetime) -> int:
    return int((moment - _EPOCH) / timedelta(microseconds=1)) * 1000


@dataclass
class Aggregate:
    """The sums of a window's rows, its latency sketch and its intents' counts."""

    sums: dict[str, float]
    sketch: LatencySketch
    intents: dict[str, int]

    @property
    def runs(self) -> int:
        return int(self.sums["runs"])


class Rows:
    """Window rollup rows of one experiment as arrays sorted by (grain, bucket): a window is found by binary search
    (`window_index`), a filter is a mask computed once per monitor, and `aggregate` sums the chosen rows, their
    sketches and intents. Sketches and intents stay JSON text until a monitor needs them; then all rows' are parsed
    in one `json.loads` and laid out row after row (CSR-like), so that choosing rows chooses their entries."""

    def __init__(self, columns: dict[str, Any] | None = None) -> None:
        columns = columns or {"grain_minutes": [], "bucket": [], **{name: [] for name in CONTEXT},
                              **{name: [] for name in _NUMBERS}, "latency_sketch": [], "intents": []}
        order = np.lexsort((np.asarray(columns["bucket"], dtype=np.int64),
                            np.asarray(columns["grain_minutes"], dtype=np.int64)))
        self.count = len(order)
        self.grain = np.asarray(columns["grain_minutes"], dtype=np.int64)[order]
        self.bucket = np.asarray(columns["bucket"], dtype=np.int64)[order]
        self._grain_bounds = {grain: (int(np.searchsorted(self.grain, grain, "left")),
                                      int(np.searchsorted(self.grain, grain, "right")))
                              for grain in (FINE_MINUTES, HOURLY_MINUTES)}
        import pandas as pd

        # Each context column as integer codes into its values: a filter compares integers, once per filter set.
        self._codes: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
        for name in CONTEXT:
            codes, values = pd.factorize(np.asarray(columns[name], dtype=object)[order])
            self._codes[name] = (codes, {value: code for code, value in enumerate(values.tolist())})
        self._masks: dict[tuple, np.ndarray] = {}
        self.numbers = (np.column_stack([np.asarray(columns[name], dtype=np.float64)[order] for name in _NUMBERS])
                        if self.count else np.zeros((0, len(_NUMBERS))))
        self._texts = {name: [columns[name][i] for i in order.tolist()] for name in ("latency_sketch", "intents")}
        self._sketches: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._intents: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.intent_names: list[str] = []

    def _parsed(self, name: str) -> list:
        texts = self._texts[name]
        return json.loads("[" + ",".join(text if isinstance(text, str) else json.dumps(text) for text in texts) + "]")

    def _sketch_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._sketches is None:
            stored = [value or [[], []] for value in self._parsed("latency_sketch")]
            lengths = [len(value[0]) for value in stored]
            self._sketches = (np.fromiter((key for value in stored for key in value[0]), dtype=np.int64),
                              np.fromiter((count for value in stored for count in value[1]), dtype=np.int64),
                              np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64))
        return self._sketches

    def _intent_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._intents is None:
            parsed = [value or {} for value in self._parsed("intents")]
            codes: dict[str, int] = {}
            self._intents = (
                np.fromiter((codes.setdefault(intent, len(codes)) for value in parsed for intent in value), dtype=np.int64),
                np.fromiter((count for value in parsed for count in value.values()), dtype=np.float64),
                np.concatenate([[0], np.cumsum([len(value) for value in parsed], dtype=np.int64)]).astype(np.int64))
            self.intent_names = list(codes)
        return self._intents

    def _range(self, grain: int, low: datetime, high: datetime) -> np.ndarray:
        first, last = self._grain_bounds[grain]
        buckets = self.bucket[first:last]
        return np.arange(first + int(np.searchsorted(buckets, _ns(low), "left")),
                         first + int(np.searchsorted(buckets, _ns(high), "left")), dtype=np.int64)

    def window_index(self, start: datetime, end: datetime) -> np.ndarray:
        """The rows of the window [start, end): hourly rows of its whole hours, 5-minute rows of its edges."""
        whole, edges = _parts(start, end)
        parts = [self._range(HOURLY_MINUTES, *whole)] if whole is not None else []
        parts += [self._range(FINE_MINUTES, low, high) for low, high in edges]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def filter_mask(self, filters: Mapping[str, str]) -> np.ndarray:
        """The rows matching every filter (a filter's name or a column -> value); computed once per filter set."""
        key = tuple(sorted((FILTER_COLUMNS.get(name, name), value) for name, value in filters.items()))
        if key not in self._masks:
            mask = np.ones(self.count, dtype=bool)
            for column, value in key:
                codes, known = self._codes[column]
                mask &= codes == known.get(value, -2)
            self._masks[key] = mask
        return self._masks[key]

    def values(self, column: str) -> list[str]:
        """The distinct values of a context column (a filter's name or a column)."""
        return sorted(self._codes[FILTER_COLUMNS.get(column, column)][1])

    def aggregate(self, index: np.ndarray, *, sketch: bool = True, intents: bool = True) -> Aggregate:
        """The sums of these rows (indexes), with their merged sketch and intents if asked for."""
        sums = dict(zip(_NUMBERS, self.numbers[index].sum(axis=0).tolist(), strict=True))
        latency = LatencySketch()
        if sketch and index.size:
            sketch_key, sketch_count, offsets = self._sketch_arrays()
            entries = _entries(offsets, index)
            if entries.size:
                keys, inverse = np.unique(sketch_key[entries], return_inverse=True)
                latency = LatencySketch([(keys, np.bincount(inverse, weights=sketch_count[entries]).astype(np.int64))])
        counted: dict[str, int] = {}
        if intents and index.size:
            intent_code, intent_count, offsets = self._intent_arrays()
            entries = _entries(offsets, index)
            totals = np.bincount(intent_code[entries], weights=intent_count[entries], minlength=len(self.intent_names))
            counted = {self.intent_names[code]: int(total) for code, total in enumerate(totals.tolist()) if total}
        return Aggregate(sums=sums, sketch=latency, intents=counted)


def _entries(offsets: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The positions of the entries of rows `index` in arrays laid out row after row (`offsets`: row starts)."""
    starts, lengths = offsets[index], offsets[index + 1] - offsets[index]
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    shifts = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return shifts + np.arange(total, dtype=np.int64)


def rows_read(*, experiment_id: str, windows: Iterable[tuple[datetime, datetime]], dense: bool = False) -> Rows:
    """Every window rollup row that any of these windows needs, in two queries (hourly, 5-minute); `dense`: rows
    of both grains over all of the windows' span (for any window inside it: a preview's steps)."""
    hours: list[tuple[datetime, datetime]] = []
    fine: list[tuple[datetime, datetime]] = []
    for start, end in windows:
        if dense:
            hours.append((start, end))
            fine.append((start, end))
            continue
        whole, edges = _parts(start, end)
        if whole is not None:
            hours.append(whole)
        fine.extend(edges)
    names = ("grain_minutes", "bucket", *CONTEXT, *_NUMBERS, "latency_sketch", "intents")
    # Read with the driver's values, not the ORM's: the bucket and the JSON as text (converted in bulk above and in
    # `Rows`), ~10x cheaper than a datetime and two parsed objects made per row.
    as_text = {"bucket": Cast("bucket", CharField()), "latency_sketch": Cast("latency_sketch", TextField()),
               "intents": Cast("intents", TextField())}
    fetched: list[tuple] = []
    for grain, spans in ((HOURLY_MINUTES, _merged(hours)), (FINE_MINUTES, _merged(fine))):
        if not spans:
            continue
        within = Q()
        for low, high in spans:
            within |= Q(bucket__gte=low, bucket__lt=high)
        rows = WindowRollup.objects.filter(within, experiment_id=experiment_id, grain_minutes=grain).order_by()
        try:
            sql, params = rows.annotate(**{f"{name}_text": text for name, text in as_text.items()}).values_list(
                *[f"{name}_text" if name in as_text else name for name in names]).query.sql_with_params()
        except EmptyResultSet:
            continue
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            fetched.extend(cursor.fetchall())
    if not fetched:
        return Rows()
    import pandas as pd

    columns = dict(zip(names, (list(column) for column in zip(*fetched, strict=True)), strict=True))
    columns["bucket"] = pd.to_datetime(pd.Index(columns["bucket"]), utc=True, format="ISO8601").asi8
    return Rows(columns)


def _merged(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Overlapping or touching spans as one (a long history reads as one range, not hundreds)."""
    result: list[list[datetime]] = []
    for low, high in sorted(spans):
        if result and low <= result[-1][1]:
            result[-1][1] = max(result[-1][1], high)
        else:
            result.append([low, high])
    return [(low, high) for low, high in result]
