"""Latency percentiles within 1 % of exact: DDSketch's logarithmic buckets (γ = 1.02), stored sparse, merged by adding.

A latency x > 0 falls in the bucket `key = ⌈log_γ x⌉`, which holds (γ^(key-1), γ^key]; the bucket's value
2·γ^key / (γ+1) is within α = (γ-1)/(γ+1) ≈ 0.99 % of every latency in it (Masson et al., "DDSketch", VLDB
2019). A percentile is read nearest-rank (the ⌈q·n⌉-th smallest latency) from the bucket that holds it, so it
is within α of the exact nearest-rank percentile, and clamped into the group's observed [min, max]: it can
never lie outside what was measured (one run: exactly its latency).

The key of each run is computed once, when the run is mirrored (`MirroredRun.latency_bucket`), in Python or,
on the attached path, in SQL (`SQL_KEY`): both call C's `log`, so they agree to the bit. The `ddsketch`
package is not used: it reads quantiles at rank q·(n-1), not nearest-rank, and stores its own protobuf.
Django-free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import chain

import numpy as np
import orjson

GAMMA = 1.02
LOG_GAMMA = math.log(GAMMA)
RELATIVE_ACCURACY = (GAMMA - 1) / (GAMMA + 1)
# Keys fit a 16-bit column: every latency from 1e-281 ms to 1e281 ms has its own bucket; beyond, the end ones.
ZERO_KEY = -32768  # latencies of 0 (or below): their value is 0
KEY_MIN, KEY_MAX = -32767, 32767


def sketch_key(value: float | None) -> int | None:
    """The bucket of one latency (None for a run without one)."""
    if value is None or math.isnan(value):
        return None
    if value <= 0:
        return ZERO_KEY
    return max(KEY_MIN, min(KEY_MAX, math.ceil(math.log(value) / LOG_GAMMA)))


def sql_key(column: str) -> str:
    """`sketch_key` as an SQLite expression (SQLite ≥ 3.35 with its math functions, as Python's sqlite3 has)."""
    return (f"CASE WHEN {column} IS NULL THEN NULL WHEN {column} <= 0 THEN {ZERO_KEY} "
            f"ELSE MAX({KEY_MIN}, MIN({KEY_MAX}, CAST(ceil(ln({column}) / {LOG_GAMMA!r}) AS INTEGER))) END")


def bucket_value(key: int) -> float:
    """The value that stands for every latency of the bucket: within RELATIVE_ACCURACY of each."""
    return 0.0 if key == ZERO_KEY else 2.0 * GAMMA ** key / (GAMMA + 1.0)


def stored_sum(first: Sequence[Sequence[int]] | str, second: Sequence[Sequence[int]] | str) -> list[list[int]]:
    """Two stored sketches (or their JSON text) added, as a stored sketch: in plain Python, several times faster
    than numpy for the two small sketches of a rollup row and the runs just added to it (the sync's steady state)."""
    first, second = (orjson.loads(part) if isinstance(part, str) else part for part in (first, second))
    if not first or not len(first[0]):
        return [list(second[0]), list(second[1])] if second and len(second[0]) else []
    if not second or not len(second[0]):
        return [list(first[0]), list(first[1])]
    counts = dict(zip(first[0], first[1], strict=True))
    for key, count in zip(second[0], second[1], strict=True):
        counts[key] = counts.get(key, 0) + count
    keys = sorted(counts)
    return [keys, [counts[key] for key in keys]]


class LatencySketch:
    """Counts per bucket key, mergeable by adding; stored as `[[keys...], [counts...]]`, keys ascending (JSON
    lists parse several times faster than an object of the same size). Parts are merged lazily, once, when a
    percentile is asked for."""

    __slots__ = ("_parts", "_texts", "_merged", "_cumulative")

    def __init__(self, parts: Iterable[tuple[Sequence[int], Sequence[int]]] = ()) -> None:
        self._parts: list[tuple[Sequence[int], Sequence[int]]] = [part for part in parts if len(part[0])]
        # stored forms as JSON text, not parsed yet: one form each, or several joined by commas (a database's
        # group_concat); all of them joined by commas make one JSON array, parsed at once
        self._texts: list[str] = []
        self._merged: tuple[np.ndarray, np.ndarray] | None = None
        self._cumulative: np.ndarray | None = None  # of the merged counts: several percentiles read one sketch

    @classmethod
    def from_keys(cls, keys: Iterable[int | None]) -> LatencySketch:
        present = [key for key in keys if key is not None]
        if not present:
            return cls()
        values, counts = np.unique(np.asarray(present, dtype=np.int64), return_counts=True)
        return cls([(values, counts)])

    @classmethod
    def from_stored(cls, stored: Sequence[Sequence[int]] | str | None) -> LatencySketch:
        """From its stored form, or that form's JSON text as a database cursor returns it: the text is parsed only
        if a percentile is asked for (a report reads many cells whose percentiles it never shows)."""
        if isinstance(stored, str):
            sketch = cls()
            sketch._texts = [stored]
            return sketch
        return cls([(stored[0], stored[1])] if stored else [])

    @classmethod
    def from_joined(cls, texts: str | None) -> LatencySketch:
        """From stored forms' JSON texts joined by commas, as the database concatenates a group's: parsed only if a
        percentile is asked for (a report reads sketches it shows no percentile of: a model's whole runs)."""
        sketch = cls()
        if texts:
            sketch._texts.append(texts)
        return sketch

    def add_stored(self, stored: Sequence[Sequence[int]] | str | None) -> None:
        """Add a stored form (or its JSON text, parsed only when a percentile is asked for)."""
        if isinstance(stored, str):
            self._texts.append(stored)
        elif stored and len(stored[0]):
            self._parts.append((stored[0], stored[1]))
        self._merged = None

    def add(self, other: LatencySketch) -> None:
        self._parts.extend(other._parts)
        self._texts.extend(other._texts)
        self._merged = None

    def _merge(self) -> tuple[np.ndarray, np.ndarray]:
        if self._texts:
            self._parts.extend((stored[0], stored[1]) for stored in orjson.loads(f"[{','.join(self._texts)}]")
                               if stored and len(stored[0]))
            self._texts = []
            self._merged = None
        if self._merged is None:
            self._cumulative = None
            if not self._parts:
                self._merged = (np.zeros(0, np.int64), np.zeros(0, np.int64))
            elif len(self._parts) == 1:
                self._merged = (np.asarray(self._parts[0][0], np.int64), np.asarray(self._parts[0][1], np.int64))
            else:
                # Counted per key in one pass over the keys' range (no sort): faster than np.unique for the
                # thousands of small sketches of a widget's breakdown (measured).
                if len(self._parts) > 16:  # many small parts: one pass over them all
                    keys = np.fromiter(chain.from_iterable(part[0] for part in self._parts), np.int64)
                    counts = np.fromiter(chain.from_iterable(part[1] for part in self._parts), np.int64)
                else:  # few, maybe long: each converted at once
                    keys = np.concatenate([np.asarray(part[0], np.int64) for part in self._parts])
                    counts = np.concatenate([np.asarray(part[1], np.int64) for part in self._parts])
                low = int(keys.min())
                totals = np.bincount(keys - low, weights=counts)
                present = np.flatnonzero(totals)
                self._merged = (present + low, totals[present].astype(np.int64))
            self._parts = [self._merged]
        return self._merged

    @property
    def count(self) -> int:
        return int(self._merge()[1].sum())

    def stored(self) -> list[list[int]]:
        keys, counts = self._merge()
        return [keys.tolist(), counts.tolist()]

    def count_above(self, value: float) -> int:
        """How many values fall in buckets above `value`'s bucket (a value within 1 % of the bucket counts as in it)."""
        keys, counts = self._merge()
        key = ZERO_KEY if value <= 0 else sketch_key(value)
        return int(counts[keys > key].sum())

    def quantile(self, q: float, *, low: float | None = None, high: float | None = None) -> float | None:
        """The nearest-rank q-quantile (0 < q ≤ 1), within RELATIVE_ACCURACY of exact and clamped into
        [low, high] (the group's observed minimum and maximum, when known). None when empty."""
        keys, counts = self._merge()
        if self._cumulative is None:
            self._cumulative = np.cumsum(counts)
        total = int(self._cumulative[-1]) if len(counts) else 0
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        position = int(np.searchsorted(self._cumulative, rank))
        value = bucket_value(int(keys[position]))
        if low is not None:
            value = max(value, low)
        if high is not None:
            value = min(value, high)
        return value
