"""Latency percentiles within 1 % of exact: DDSketch's logarithmic buckets (γ = 1.02), stored sparse, merged by adding.

A latency x > 0 falls in the bucket `key = ⌈log_γ x⌉`, which holds (γ^(key-1), γ^key]; the bucket's value
2·γ^key / (γ+1) is within α = (γ-1)/(γ+1) ≈ 0.99 % of every latency in it (Masson et al., "DDSketch", VLDB
2019). A percentile is read nearest-rank (the ⌈q·n⌉-th smallest latency) from the bucket that holds it, so it
is within α of the exact nearest-rank percentile, and clamped into the group's observed [min, max]: it can
never lie outside what was measured (one run: exactly its latency).

The key of each run is computed once, when the run is mirrored (`MirroredRun.latency_bucket`), in Python or,
on the attached path, in SQL (`SQL_KEY`): both call C's `log`, so they agree to the bit. The `ddsketch`
package is not used: it reads quantiles at rank q·(n-1), not nearest-rank, and stores its own protobuf.

Stored (`STORED`): each bucket as 6 bytes, its key (int16) and its count (uint32), little-endian, keys ascending.
Several stored sketches concatenated are still a list of buckets (keys repeated): a database concatenates a
group's sketches (`group_concat`, `string_agg`) and one `numpy.frombuffer` reads them all, with no parsing (the
JSON text this replaced cost a 30-day report ~4 ms to parse, bench/analytics.py). Django-free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import chain

import numpy as np

GAMMA = 1.02
LOG_GAMMA = math.log(GAMMA)
RELATIVE_ACCURACY = (GAMMA - 1) / (GAMMA + 1)
# Keys fit a 16-bit column: every latency from 1e-281 ms to 1e281 ms has its own bucket; beyond, the end ones.
ZERO_KEY = -32768  # latencies of 0 (or below): their value is 0
KEY_MIN, KEY_MAX = -32767, 32767
STORED = np.dtype([("key", "<i2"), ("count", "<u4")])  # one bucket of a stored sketch (packed: 6 bytes)
COUNT_MAX = 2**32 - 1  # a bucket's count in one stored sketch (a rollup row's: one day of one value)
# A stored sketch as the database gives it (bytes; memoryview from some drivers) or as a writer builds it
# (`[[keys...], [counts...]]`, `[]` when empty).
Stored = bytes | bytearray | memoryview | Sequence[Sequence[int]]


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


def sketch_encode(keys: Sequence[int] | np.ndarray, counts: Sequence[int] | np.ndarray) -> bytes:
    """The stored form of these buckets (keys ascending, each once)."""
    stored = np.empty(len(keys), STORED)
    stored["key"] = keys
    if len(counts) and (np.max(counts) if isinstance(counts, np.ndarray) else max(counts)) > COUNT_MAX:
        raise OverflowError(f"a sketch bucket counts more than {COUNT_MAX} latencies")
    stored["count"] = counts
    return stored.tobytes()


def stored_bytes(stored: Stored | None) -> bytes:
    """A stored sketch as its bytes, whichever form it came in."""
    if stored is None:
        return b""
    if isinstance(stored, bytes):
        return stored
    if isinstance(stored, (bytearray, memoryview)):
        return bytes(stored)
    return sketch_encode(stored[0], stored[1]) if len(stored) and len(stored[0]) else b""


def stored_sum(first: Stored | None, second: Stored | None) -> bytes:
    """Two stored sketches added, as a stored sketch: their buckets concatenated and merged as any sketch's (one
    bincount: the sync's steady state adds a few new runs to each rollup row, ~15 µs a row against 18 for the JSON
    form's merge in a dict, measured on rollup-sized sketches)."""
    return LatencySketch.from_joined(stored_bytes(first) + stored_bytes(second)).encoded()


class LatencySketch:
    """Counts per bucket key, mergeable by adding. Parts are merged lazily, once, when a percentile is asked for."""

    __slots__ = ("_parts", "_blobs", "_reduced", "_merged", "_cumulative")

    def __init__(self, parts: Iterable[tuple[Sequence[int], Sequence[int]]] = ()) -> None:
        self._parts: list[tuple[Sequence[int], Sequence[int]]] = [part for part in parts if len(part[0])]
        # stored forms (bytes), not read yet: each one sketch, or several concatenated by a database
        self._blobs: list[bytes] = []
        self._reduced = False  # is the one part or blob a single sketch's (keys ascending, each once)?
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
    def from_stored(cls, stored: Stored | None) -> LatencySketch:
        """From one stored sketch, as the database gives it (read only if a percentile is asked for: a report reads
        many cells whose percentiles it never shows) or as a list."""
        sketch = cls()
        sketch.add_stored(stored)
        sketch._reduced = True
        return sketch

    @classmethod
    def from_joined(cls, blob: bytes | memoryview | None) -> LatencySketch:
        """From stored sketches concatenated, as the database concatenates a group's."""
        sketch = cls()
        sketch.add_stored(blob)
        return sketch

    def add_stored(self, stored: Stored | None) -> None:
        """Add a stored sketch (bytes are read only when a percentile is asked for)."""
        if isinstance(stored, (bytes, bytearray, memoryview)):
            if stored:
                self._blobs.append(stored_bytes(stored))
        elif stored and len(stored[0]):
            self._parts.append((stored[0], stored[1]))
        self._merged, self._reduced = None, False

    def add(self, other: LatencySketch) -> None:
        empty = not self._parts and not self._blobs
        self._parts.extend(other._parts)
        self._blobs.extend(other._blobs)
        self._merged, self._reduced = None, empty and other._reduced

    def _merge(self) -> tuple[np.ndarray, np.ndarray]:
        if self._merged is not None:
            return self._merged
        self._cumulative = None
        parts = self._parts
        if self._blobs:
            buckets = np.frombuffer(self._blobs[0] if len(self._blobs) == 1 else b"".join(self._blobs), STORED)
            parts = [*parts, (buckets["key"], buckets["count"])]
        if not parts:
            self._merged = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        elif len(parts) == 1 and (self._reduced or len(self._blobs) == 0):
            self._merged = (np.asarray(parts[0][0], np.int64), np.asarray(parts[0][1], np.int64))
        else:
            # Counted per key in one pass over the keys' range (no sort): faster than np.unique for the
            # thousands of small sketches of a widget's breakdown (measured).
            if len(parts) > 16:  # many small parts: one pass over them all
                keys = np.fromiter(chain.from_iterable(part[0] for part in parts), np.int64)
                counts = np.fromiter(chain.from_iterable(part[1] for part in parts), np.int64)
            elif len(parts) > 1:  # few, maybe long: each converted at once
                keys = np.concatenate([np.asarray(part[0], np.int64) for part in parts])
                counts = np.concatenate([np.asarray(part[1], np.int64) for part in parts])
            else:  # one, several sketches concatenated (a database's group, two rows added)
                keys, counts = np.asarray(parts[0][0], np.int64), parts[0][1]
            if len(keys):
                low = int(keys.min())
                totals = np.bincount(keys - low, weights=counts)
                present = np.flatnonzero(totals)
                self._merged = (present + low, totals[present].astype(np.int64))
            else:
                self._merged = (keys, counts)
        self._parts, self._blobs, self._reduced = [self._merged], [], True
        return self._merged

    @property
    def count(self) -> int:
        return int(self._merge()[1].sum())

    def stored(self) -> list[list[int]]:
        keys, counts = self._merge()
        return [keys.tolist(), counts.tolist()]

    def encoded(self) -> bytes:
        """The merged sketch in its stored form."""
        return sketch_encode(*self._merge())

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
