"""Exports of the reports as files (pandas writes the CSV: quoting, nulls and number formats done right)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TREND_COLUMNS = ("day", "runs", "success_rate", "error_rate", "avg_confidence", "p50_ms", "p95_ms",
                 "out_of_scope_rate")


def trends_csv(*, rows: Sequence[dict[str, Any]]) -> str:
    """The daily trends table (one row per day, oldest first) as CSV text; empty cells for nulls."""
    import pandas as pd

    return pd.DataFrame(list(rows), columns=list(TREND_COLUMNS)).to_csv(index=False)
