"""The local model's two numbers chosen on a validation set: the out-of-scope threshold and the softmax temperature.

Both read a fitted `LocalIntentModel` (its `scored` and `decision_scores`); neither refits it. The CLINC150 values
they chose are the defaults in `LocalModelConfig`; `optimize_intents` and `bench/local_model.py` call them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .local_model import OOS_LABELS

if TYPE_CHECKING:
    from .local_model import LocalIntentModel


def choose_oos_threshold(
    model: LocalIntentModel,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    min_in_scope_accuracy_drop: float = 0.01,
) -> float:
    """The out-of-scope threshold for `model` (on its out-of-scope score), chosen on a labelled validation set.

    Criterion: the largest threshold whose in-scope accuracy on `texts` is at most
    `min_in_scope_accuracy_drop` (absolute, 0.01 = one point) below the accuracy with no threshold.
    In other words: the in-scope accuracy we agree to pay, spent entirely on rejecting more. Since
    raising the threshold can only reject more, this is also the threshold with the best out-of-scope
    recall within that budget, so out-of-scope examples (labels OUT_OF_SCOPE or "oos") are not needed:
    they are only excluded from the in-scope count. The threshold is put halfway between the last
    correctly answered score it may reject and the first one it must keep.
    """
    labels = [str(label) for label in labels]
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if not 0.0 <= min_in_scope_accuracy_drop <= 1.0:
        raise ValueError("min_in_scope_accuracy_drop must be within [0, 1]")
    in_scope = np.array([label not in OOS_LABELS for label in labels])
    if not in_scope.any():
        raise ValueError("the validation set needs in-scope examples")
    probabilities, oos_scores = model.scored(texts)
    predicted = np.asarray(model.intents, dtype=object)[probabilities.argmax(axis=1)]
    correct = in_scope & (predicted == np.asarray(labels, dtype=object))
    confidences = np.sort(oos_scores[correct])
    budget = int(math.floor(min_in_scope_accuracy_drop * in_scope.sum() + 1e-9))
    if budget >= len(confidences):  # may reject every correct answer
        return 1.0
    keep = float(confidences[budget])  # the first correct answer that must stay accepted
    if budget == 0:
        return keep if keep <= 0 else float(np.nextafter(keep, -np.inf))
    lower = float(confidences[budget - 1])
    return (lower + keep) / 2 if lower < keep else keep


def fit_temperature(model: LocalIntentModel, texts: Sequence[str], labels: Sequence[str]) -> float:
    """Softmax temperature with the lowest log-loss on the in-scope examples of a validation set."""
    from scipy.optimize import minimize_scalar

    index = {intent: i for i, intent in enumerate(model.intents)}
    keep = [i for i, label in enumerate(labels) if label in index]
    if not keep:
        raise ValueError("no validation example is labelled with a catalog intent")
    scores = model.decision_scores([texts[i] for i in keep])
    target = np.array([index[labels[i]] for i in keep])

    def log_loss(log_t: float) -> float:
        z = scores / math.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(target)), target]))

    result = minimize_scalar(log_loss, bounds=(math.log(1e-3), math.log(10.0)), method="bounded")
    return float(math.exp(result.x))
