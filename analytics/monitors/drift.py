"""Drift of the intent distribution: the window against a reference period, per segment (each module, each role,
or the whole traffic), by the Jensen-Shannon distance (base 2: 0 same, 1 disjoint) and a chi-square test of
homogeneity (scipy). A segment drifts when both have min_runs, its distance passes a threshold and the test's
p-value is below `drift_p_value`; the monitor's value is the largest distance among the segments that pass the
test. The details name, per drifting segment, the intents whose share moved most, with their shares before/after.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

from .outcome import NO_DATA, OK, Outcome, graded
from .windows import Rows

TOP_MOVERS = 5


def reference_of(monitor, start: datetime) -> tuple[datetime, datetime]:
    """The pinned reference period, or the `reference_days` before the window."""
    if monitor.reference_start is not None and monitor.reference_end is not None:
        return monitor.reference_start, monitor.reference_end
    return start - timedelta(days=monitor.reference_days), start


def segment_drift(window: dict[str, int], reference: dict[str, int]) -> dict[str, Any]:
    """Distance, test and movers of one segment's two intent distributions (counts)."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    intents = sorted(set(window) | set(reference))
    now = np.array([window.get(i, 0) for i in intents], dtype=float)
    before = np.array([reference.get(i, 0) for i in intents], dtype=float)
    distance = float(jensenshannon(now / now.sum(), before / before.sum(), base=2))
    if len(intents) > 1:
        chi2, p_value, dof, _ = chi2_contingency(np.vstack([now, before]))
    else:
        chi2, p_value, dof = 0.0, 1.0, 0
    share_now, share_before = now / now.sum(), before / before.sum()
    order = np.argsort(-np.abs(share_now - share_before), kind="stable")[:TOP_MOVERS]
    return {"js_distance": distance, "chi2": float(chi2), "p_value": float(p_value), "dof": int(dof),
            "runs": int(now.sum()), "reference_runs": int(before.sum()),
            "movers": [{"intent": intents[i], "share_before": float(share_before[i]), "share_now": float(share_now[i])}
                       for i in order if share_now[i] != share_before[i]]}


def drift_outcome(monitor, rows: Rows, start: datetime, end: datetime):
    filters = rows.filter_mask(monitor.filters or {})
    in_window = rows.window_index(start, end)
    in_window = in_window[filters[in_window]]
    in_reference = rows.window_index(*reference_of(monitor, start))
    in_reference = in_reference[filters[in_reference]]
    column = monitor.segment
    segments = rows.values(column) if column else [None]
    results, total = [], 0
    for segment in segments:
        chosen = rows.filter_mask({column: segment}) if column else np.ones(rows.count, dtype=bool)
        window = rows.aggregate(in_window[chosen[in_window]], sketch=False)
        total += window.runs
        if window.runs < max(1, monitor.min_runs):
            continue
        reference = rows.aggregate(in_reference[chosen[in_reference]], sketch=False)
        if reference.runs < max(1, monitor.min_runs):
            continue
        result = segment_drift(window.intents, reference.intents)
        results.append({"segment": {column: segment} if column else {}, **result})
    reference_start, reference_end = reference_of(monitor, start)
    base = {"window_start": start, "window_end": end, "runs": total}
    details: dict[str, Any] = {"reference": [reference_start.isoformat(), reference_end.isoformat()],
                               "segments_compared": len(results)}
    if not results:
        return Outcome(state=NO_DATA, value=None, threshold=None, details=details | {"reason": "min_runs"}, **base)
    significant = [r for r in results if r["p_value"] < monitor.drift_p_value]
    value = max((r["js_distance"] for r in significant), default=0.0)
    state, threshold = graded(value, monitor) if significant else (OK, graded(0.0, monitor)[1])
    drifting = sorted((r for r in significant if graded(r["js_distance"], monitor)[0] != OK),
                      key=lambda r: -r["js_distance"])
    return Outcome(state=state, value=value, threshold=threshold, details=details | {"drifting": drifting[:10]},
                   **base)
