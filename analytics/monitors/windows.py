"""Any window and filter of the recent traffic, from the window rollups read once (`WindowRollup`).

A window [start, end) (both on 5-minute boundaries) is the hourly rows of the whole hours inside it and the
5-minute rows of its partial hours at either end; hourly rows keep ANALYTICS_HOURLY_ROLLUP_DAYS, 5-minute ones
ANALYTICS_FINE_ROLLUP_DAYS (more than the longest window). `reading.rows_read` gets every row any of a set of
windows needs; `Rows.aggregate` sums the rows of one window and filter with numpy (no query): one read serves all
monitors of an evaluation, all windows of an anomaly's history, every step of a preview.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from ..mirror.sketch import STORED, LatencySketch, stored_bytes
from ..mirror.windows import CONTEXT, COUNTS, SUMS
from ..models import FINE_MINUTES, HOURLY_MINUTES

HOUR = timedelta(minutes=HOURLY_MINUTES)
STEP = timedelta(minutes=FINE_MINUTES)
# A monitor's filter names (the API's) -> the rollup's columns.
FILTER_COLUMNS = {"module": "current_module", "user_role": "user_role", "model_name": "model_name",
                  "prompt_version": "prompt_version"}
NUMBERS = (*COUNTS, *SUMS)
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


def parts(start: datetime, end: datetime) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
    """[start, end) as the span of its whole hours (or None) and the spans of 5-minute buckets at its edges."""
    whole_start, whole_end = _ceil_hour(start), _floor_hour(end)
    if whole_start >= whole_end:
        return None, [(start, end)]
    edges = [(start, whole_start)] if start < whole_start else []
    if whole_end < end:
        edges.append((whole_end, end))
    return (whole_start, whole_end), edges


def ns(moment: datetime) -> int:
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


@dataclass
class Block:
    """The window rollup rows of one bucket (one grain), prepared for `Rows`: columns as arrays, the sketches' and
    intents' entries laid out row after row with each row's count of them."""

    grain: int
    bucket: int  # ns since the epoch
    context: dict[str, np.ndarray]  # column -> object array, one value a row
    numbers: np.ndarray  # rows × NUMBERS
    sketch_keys: np.ndarray
    sketch_counts: np.ndarray
    sketch_lengths: np.ndarray
    intent_names: np.ndarray  # object
    intent_counts: np.ndarray
    intent_lengths: np.ndarray

    @classmethod
    def of(cls, grain: int, bucket: int, rows: list[tuple], sketches: list, intents: list) -> Block:
        """From rows of (context..., numbers...), each row's stored sketch (bytes) and its parsed intents."""
        sketches = [stored_bytes(value) for value in sketches]
        buckets = np.frombuffer(b"".join(sketches), STORED)
        intents = [value or {} for value in intents]
        width = len(CONTEXT)
        return cls(
            grain=grain, bucket=bucket,
            context={name: np.array([row[i] for row in rows], dtype=object) for i, name in enumerate(CONTEXT)},
            numbers=np.array([row[width:] for row in rows], dtype=np.float64).reshape(len(rows), len(NUMBERS)),
            sketch_keys=buckets["key"].astype(np.int64), sketch_counts=buckets["count"].astype(np.int64),
            sketch_lengths=np.array([len(value) // STORED.itemsize for value in sketches], dtype=np.int64),
            intent_names=np.array([name for value in intents for name in value], dtype=object),
            intent_counts=np.fromiter((c for value in intents for c in value.values()), dtype=np.float64),
            intent_lengths=np.array([len(value) for value in intents], dtype=np.int64))


class Rows:
    """Window rollup rows of one experiment as arrays sorted by (grain, bucket), assembled from `Block`s: a window is
    found by binary search (`window_index`), a filter is a mask computed once per filter set, and `aggregate` sums
    the chosen rows, their sketches and intents (laid out row after row, CSR-like, so that choosing rows chooses
    their entries)."""

    def __init__(self, blocks: list[Block] | None = None) -> None:
        import pandas as pd

        blocks = sorted(blocks or [], key=lambda block: (block.grain, block.bucket))
        sizes = np.array([len(block.numbers) for block in blocks], dtype=np.int64)
        self.count = int(sizes.sum())
        self.grain = np.repeat(np.array([b.grain for b in blocks], dtype=np.int64), sizes)
        self.bucket = np.repeat(np.array([b.bucket for b in blocks], dtype=np.int64), sizes)
        self._grain_bounds = {grain: (int(np.searchsorted(self.grain, grain, "left")),
                                      int(np.searchsorted(self.grain, grain, "right")))
                              for grain in (FINE_MINUTES, HOURLY_MINUTES)}
        # Each context column as integer codes into its values: a filter compares integers, once per filter set.
        self._codes: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
        for name in CONTEXT:
            values = np.concatenate([b.context[name] for b in blocks]) if blocks else np.zeros(0, dtype=object)
            codes, names = pd.factorize(values)
            self._codes[name] = (codes, {value: code for code, value in enumerate(names.tolist())})
        self._masks: dict[tuple, np.ndarray] = {}
        self.numbers = np.vstack([b.numbers for b in blocks]) if blocks else np.zeros((0, len(NUMBERS)))

        def joined(name: str, dtype) -> np.ndarray:
            return np.concatenate([getattr(b, name) for b in blocks]) if blocks else np.zeros(0, dtype=dtype)

        def offsets(name: str) -> np.ndarray:
            return np.concatenate([[0], np.cumsum(joined(name, np.int64))]).astype(np.int64)

        self.sketch_key, self.sketch_count = joined("sketch_keys", np.int64), joined("sketch_counts", np.int64)
        self.sketch_offsets = offsets("sketch_lengths")
        codes, names = pd.factorize(joined("intent_names", object))
        self.intent_code, self.intent_names = codes.astype(np.int64), names.tolist()
        self.intent_count, self.intent_offsets = joined("intent_counts", np.float64), offsets("intent_lengths")

    def _range(self, grain: int, low: datetime, high: datetime) -> np.ndarray:
        first, last = self._grain_bounds[grain]
        buckets = self.bucket[first:last]
        return np.arange(first + int(np.searchsorted(buckets, ns(low), "left")),
                         first + int(np.searchsorted(buckets, ns(high), "left")), dtype=np.int64)

    def window_index(self, start: datetime, end: datetime) -> np.ndarray:
        """The rows of the window [start, end): hourly rows of its whole hours, 5-minute rows of its edges."""
        whole, edges = parts(start, end)
        ranges = [self._range(HOURLY_MINUTES, *whole)] if whole is not None else []
        ranges += [self._range(FINE_MINUTES, low, high) for low, high in edges]
        return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)

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
        sums = dict(zip(NUMBERS, self.numbers[index].sum(axis=0).tolist(), strict=True))
        latency = LatencySketch()
        if sketch and index.size:
            entries = _entries(self.sketch_offsets, index)
            if entries.size:
                keys, inverse = np.unique(self.sketch_key[entries], return_inverse=True)
                latency = LatencySketch([(keys, np.bincount(inverse, weights=self.sketch_count[entries])
                                          .astype(np.int64))])
        counted: dict[str, int] = {}
        if intents and index.size:
            entries = _entries(self.intent_offsets, index)
            totals = np.bincount(self.intent_code[entries], weights=self.intent_count[entries],
                                 minlength=len(self.intent_names))
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
