"""How far a detector's confidence can be taken at its word: reliability bins, expected calibration error, Brier
score, and the confidence threshold that reaches a target precision. Shared by the offline evaluation (`intent`) and
the calibration report (`analytics`); numpy and scikit-learn do the arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def reliability(confidences: Sequence[float], correct: Sequence[bool], *, bins: int = 10) -> dict[str, Any]:
    """Equal-width bins over [0, 1] (bin i holds confidences in [i/bins, (i+1)/bins), the last one 1.0 too): each
    bin's runs, accuracy and mean confidence (nulls when empty); ECE = Σ n_b/N · |accuracy_b − confidence_b|; Brier =
    mean (confidence − correct)²."""
    from sklearn.metrics import brier_score_loss

    p = np.asarray(confidences, dtype=float)
    y = np.asarray(correct, dtype=bool)
    n = len(p)
    index = np.clip(np.floor(p * bins).astype(int), 0, bins - 1) if n else np.zeros(0, dtype=int)
    counts = np.bincount(index, minlength=bins)
    hits = np.bincount(index, weights=y.astype(float), minlength=bins)
    sums = np.bincount(index, weights=p, minlength=bins)
    rows = []
    for i in range(bins):
        runs = int(counts[i])
        rows.append({"low": i / bins, "high": (i + 1) / bins, "runs": runs,
                     "accuracy": float(hits[i] / runs) if runs else None,
                     "mean_confidence": float(sums[i] / runs) if runs else None})
    ece = float(np.sum(np.abs(hits - sums)) / n) if n else None  # n_b/N·|acc_b − conf_b| = |hits_b − sums_b| / N
    return {
        "runs": n,
        "accuracy": float(y.mean()) if n else None,
        "mean_confidence": float(p.mean()) if n else None,
        "ece": ece,
        "brier": float(brier_score_loss(y.astype(int), p, pos_label=1)) if n else None,
        "bins": rows,
    }


def threshold_for_precision(confidences: Sequence[float], correct: Sequence[bool], *,
                            target: float) -> dict[str, Any]:
    """The lowest confidence threshold whose kept answers (confidence ≥ threshold; the others would become
    out_of_scope) are right at least `target` of the time, so the one that keeps most; what share it keeps
    (coverage) and its precision. `threshold` is null when no threshold reaches the target."""
    p = np.asarray(confidences, dtype=float)
    y = np.asarray(correct, dtype=bool)
    answer: dict[str, Any] = {"target_precision": target, "threshold": None, "precision": None, "coverage": None,
                              "kept": 0}
    if not len(p):
        return answer
    order = np.argsort(-p, kind="stable")
    p, y = p[order], y[order]
    precision = np.cumsum(y) / np.arange(1, len(p) + 1)
    # A threshold keeps every answer with that confidence or more: only the last of equal confidences counts.
    last_of_value = np.append(p[1:] != p[:-1], True)
    reaching = np.flatnonzero(last_of_value & (precision >= target - 1e-12))
    if not len(reaching):
        return answer
    cut = int(reaching[-1])
    return answer | {"threshold": float(p[cut]), "precision": float(precision[cut]), "coverage": (cut + 1) / len(p),
                     "kept": cut + 1}
