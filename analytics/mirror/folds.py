"""Folding the free-text context (role, module, tab) before the rollups group the runs.

A day keeps the ANALYTICS_ROLLUP_TOP_VALUES most frequent values of each such column in rows of their own; the
runs with any other value count under `other` (a row marked `folded`). The runs' values are replaced before any
dimension is grouped, so a dimension's own rows and its pairs' rows (`module+intent`, ...) fold the same values:
the rows of a pair under a filter on a kept value hold exactly that value's runs.

Two ways to decide what folds: a whole day recomputed ranks its values (`folds_ranked`); runs added to a day
that has rows already follow the day's rows (`folds_followed`): a value with a row keeps it, a new value gets one
while the day has fewer than the top and no fold, else it goes to `other` (a value is always wholly in its own
row or wholly in `other`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..models import OTHER

# column -> {(day code, value) whose runs count under `other`}
Folds = dict[str, set[tuple[int, str]]]


def _distinct(day_code, values) -> Any:
    """(day code, value) of the runs, once each, in the order they first appear (pandas)."""
    import pandas as pd

    return pd.DataFrame({"day": day_code, "value": values.fillna("")}).drop_duplicates()


def folds_ranked(*, frame, day_code, columns: Iterable[str], top: int, days: Iterable[int] | None = None) -> Folds:
    """Per column, the values folded when these runs are a whole day (or several; only `days` if given): beyond the
    day's `top` values by runs (then name), `other` itself counted as one of the folded."""
    import pandas as pd

    only = None if days is None else set(days)
    folds: Folds = {}
    for column in columns:
        counts = pd.DataFrame({"day": day_code, "value": frame[column].fillna("")}).value_counts()
        per_day = counts.groupby(level=0).size()
        folding = per_day.index[per_day > top]
        if only is not None:
            folding = [day for day in folding if day in only]
        decided: set[tuple[int, str]] = set()
        for day in folding:
            group = counts.xs(day, level=0)
            ranked = sorted(group.items(), key=lambda item: (-item[1], item[0]))
            kept = {value for value, _ in ranked[:top] if value != OTHER}
            decided |= {(int(day), value) for value in group.index if value not in kept}
        folds[column] = decided
    return folds


def folds_followed(*, frame, day_code, columns: Mapping[str, str], days: list, rows: Mapping[tuple, bool],
                   top: int, only: Iterable[int]) -> tuple[Folds, set[tuple[int, str]]]:
    """Per column, the values of these new runs (days `only`: days that have rows) folded to follow the day's
    rollup `rows` ({(day, dimension, value): folded}); and the (day code, dimension) that fold after them.
    `columns`: column -> its dimension."""
    named: dict[tuple, int] = {}
    folding: set[tuple] = set()
    for (day, dimension, _value), folded in rows.items():
        if folded:
            folding.add((day, dimension))
        else:
            named[(day, dimension)] = named.get((day, dimension), 0) + 1
    only = set(only)
    folds: Folds = {}
    for column, dimension in columns.items():
        decided: set[tuple[int, str]] = set()
        for code, value in _distinct(day_code, frame[column]).itertuples(index=False):
            day = days[code]
            if code not in only or value == OTHER or (day, dimension, value) in rows:
                continue
            if (day, dimension) in folding or named.get((day, dimension), 0) >= top:
                decided.add((int(code), value))
                folding.add((day, dimension))
            else:
                named[(day, dimension)] = named.get((day, dimension), 0) + 1
        folds[column] = decided
    folded_days = {(code, dimension) for code, day in enumerate(days) for dimension in columns.values()
                   if (day, dimension) in folding}
    return folds, folded_days


def folds_apply(*, frame, day_code, folds: Folds):
    """The runs' columns with the folded values replaced by `other` (a new frame; `frame` is left as it was)."""
    import pandas as pd

    replaced = {}
    for column, decided in folds.items():
        if not decided:
            continue
        values = frame[column].fillna("")
        mask = pd.MultiIndex.from_arrays([day_code, values]).isin(list(decided))
        replaced[column] = values.mask(mask, OTHER)
    return frame.assign(**replaced) if replaced else frame


def folded_days_of(folds: Folds, columns: Mapping[str, str]) -> set[tuple[int, str]]:
    """(day code, dimension) that fold some value, from `folds_ranked`'s answer."""
    return {(code, columns[column]) for column, decided in folds.items() for code, _ in decided}
