"""Benchmark: the offline intent model on CLINC150, against plain TF-IDF + logistic regression.

    python bench/local_model.py [--data PATH] [--queries 1000] [--no-baseline] [--no-word-vectors]

Protocol (nothing is tuned on test):
1. fit `LocalIntentModel` (default config: TF-IDF n-grams + mean GloVe vectors; `--no-word-vectors` for
   TF-IDF alone) on `train` only (15,000 in-scope utterances, no oos_train);
2. on `val` (in-scope) fit the softmax temperature; on `val` + `oos_val` choose the out-of-scope threshold
   with `choose_oos_threshold` (largest threshold costing <= 1 point of val in-scope accuracy);
3. report on `test` + `oos_test`: in-scope accuracy (predicted out_of_scope counts as wrong), OOS recall,
   macro-F1 over the 150 intents + out_of_scope, and single-call predict() latency;
4. the baseline (TF-IDF word 1-2 + char_wb 2-5, LogisticRegression(C=20), no threshold), same process.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

REPO = Path(__file__).resolve().parents[1]
PROJECT_DATA = REPO / "intent" / "data" / "clinc150" / "data_full.json"
SHARED_DATA = Path("/work/shared/data/clinc150/data_full.json")


def _load_local_model_module():
    """intent/program/local_model.py (and the local_features it imports) on their own: importing the package
    would pull in DSPy. A bare package over the same folder, whose __init__ is not run."""
    package = types.ModuleType("intent_local")
    package.__path__ = [str(REPO / "intent" / "program")]
    sys.modules[package.__name__] = package
    return importlib.import_module("intent_local.local_model")


lm = _load_local_model_module()
OOS = lm.OUT_OF_SCOPE


def split(data: dict, name: str) -> tuple[list[str], list[str]]:
    rows = data[name] + data[f"oos_{name}"] if name in ("val", "test") else data[name]
    return [t for t, _ in rows], [OOS if label == "oos" else label for _, label in rows]


def scores(y_true: list[str], y_pred: list[str], intents) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    in_scope = y_true != OOS
    return {
        "in_scope_accuracy": float((y_pred[in_scope] == y_true[in_scope]).mean()),
        "oos_recall": float((y_pred[~in_scope] == OOS).mean()) if (~in_scope).any() else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, labels=[*intents, OOS], average="macro", zero_division=0)),
    }


def latency_ms(predict_one, queries: list[str]) -> tuple[float, float]:
    for q in queries[:50]:  # warm-up
        predict_one(q)
    times = []
    for q in queries:
        started = time.perf_counter()
        predict_one(q)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times)), float(np.percentile(times, 99))


def line(name: str, figures: dict[str, float]) -> str:
    return (
        f"{name:<34} in-scope acc {figures['in_scope_accuracy'] * 100:6.2f} %   "
        f"OOS recall {figures['oos_recall'] * 100:6.2f} %   macro-F1 {figures['macro_f1'] * 100:6.2f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = PROJECT_DATA if PROJECT_DATA.exists() else SHARED_DATA
    parser.add_argument("--data", type=Path, default=default, help=f"CLINC150 data_full.json (default {default})")
    parser.add_argument("--queries", type=int, default=1000, help="single predict() calls timed")
    parser.add_argument("--no-baseline", action="store_true", help="skip the logistic-regression baseline")
    parser.add_argument("--no-word-vectors", action="store_true", help="TF-IDF features only (the ablation)")
    args = parser.parse_args()

    data = json.loads(args.data.read_text())
    train_x, train_y = split(data, "train")
    val_x, val_y = split(data, "val")
    test_x, test_y = split(data, "test")
    rng = np.random.default_rng(0)
    queries = [test_x[i] for i in rng.permutation(len(test_x))[: args.queries]]
    print(
        f"data {args.data}: train {len(train_x)}, val {len(val_x)}, test {len(test_x)} "
        f"({sum(y == OOS for y in test_y)} out-of-scope)"
    )

    # ---- local model
    config = lm.LocalModelConfig(word_vectors=None) if args.no_word_vectors else lm.LocalModelConfig()
    print(f"config {json.dumps(config.as_dict())}")
    wall, cpu = time.perf_counter(), time.process_time()
    model = lm.LocalIntentModel.fit(train_x, train_y, config)
    fit_s, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"fit: {fit_s:.2f} s wall ({fit_cpu:.2f} s CPU), {len(model.intents)} intents")

    in_scope_val = [i for i, y in enumerate(val_y) if y != OOS]
    temperature = lm.fit_temperature(model, [val_x[i] for i in in_scope_val], [val_y[i] for i in in_scope_val])
    tuned = model.with_temperature(temperature)
    threshold = lm.choose_oos_threshold(tuned, val_x, val_y, min_in_scope_accuracy_drop=0.01)
    tuned = tuned.with_threshold(threshold)
    print(
        f"chosen on val: temperature {temperature:.4f} (default {config.temperature}), "
        f"oos_threshold {threshold:.4f} (default {config.oos_threshold})"
    )
    print(
        line(
            "val   (val-tuned T + threshold)",
            scores(val_y, [p.intent for p in tuned.predict_many(val_x)], model.intents),
        )
    )

    test_figures = scores(test_y, [p.intent for p in tuned.predict_many(test_x)], model.intents)
    print(line("TEST  local, val-tuned", test_figures))
    shipped = scores(test_y, [p.intent for p in model.predict_many(test_x)], model.intents)
    print(line("TEST  local, shipped defaults", shipped))
    no_threshold = scores(test_y, [p.intent for p in model.with_threshold(0.0).predict_many(test_x)], model.intents)
    print(line("TEST  local, no threshold", no_threshold))

    # for information only: the shipped budget is 0.01, fixed before looking at test
    print("threshold budget (val in-scope accuracy given up) -> threshold chosen on val -> val | test:")
    for budget in (0.005, 0.01, 0.015, 0.02):
        th = lm.choose_oos_threshold(tuned, val_x, val_y, min_in_scope_accuracy_drop=budget)
        at = tuned.with_threshold(th)
        v = scores(val_y, [p.intent for p in at.predict_many(val_x)], model.intents)
        f = scores(test_y, [p.intent for p in at.predict_many(test_x)], model.intents)
        print(
            f"  {budget:5.3f} -> {th:.3f} -> val in-scope {v['in_scope_accuracy'] * 100:.2f} %, "
            f"OOS recall {v['oos_recall'] * 100:.2f} % | test in-scope {f['in_scope_accuracy'] * 100:.2f} %, "
            f"OOS recall {f['oos_recall'] * 100:.2f} %"
        )

    p50, p99 = latency_ms(model.predict, queries)
    started = time.perf_counter()
    model.predict_many(test_x)
    batch_us = (time.perf_counter() - started) / len(test_x) * 1e6
    print(
        f"predict(): median {p50:.3f} ms, p99 {p99:.3f} ms over {len(queries)} single calls; "
        f"predict_many(): {batch_us:.0f} us/query"
    )

    if args.no_baseline:
        return

    # ---- baseline: plain TF-IDF + logistic regression, no threshold
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    baseline = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2)),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5)),
        ),
        LogisticRegression(C=20, max_iter=1000),
    )
    wall, cpu = time.perf_counter(), time.process_time()
    baseline.fit(train_x, train_y)
    base_fit_s, base_fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"baseline fit: {base_fit_s:.2f} s wall ({base_fit_cpu:.2f} s CPU)")
    base_figures = scores(test_y, list(baseline.predict(test_x)), baseline.classes_)
    print(line("TEST  baseline LR, no threshold", base_figures))
    proba = baseline.predict_proba(test_x)
    base_015 = np.where(proba.max(axis=1) < 0.15, OOS, baseline.classes_[proba.argmax(axis=1)])
    print(line("TEST  baseline LR, threshold 0.15", scores(test_y, list(base_015), baseline.classes_)))
    b50, b99 = latency_ms(lambda q: baseline.predict([q]), queries)
    print(f"baseline predict([q]): median {b50:.3f} ms, p99 {b99:.3f} ms")

    print(
        "local / baseline: "
        f"fit time x{fit_s / base_fit_s:.2f}, predict median x{p50 / b50:.2f}, "
        f"in-scope acc {(test_figures['in_scope_accuracy'] - base_figures['in_scope_accuracy']) * 100:+.2f} pt, "
        f"OOS recall {(test_figures['oos_recall'] - base_figures['oos_recall']) * 100:+.2f} pt, "
        f"macro-F1 {(test_figures['macro_f1'] - base_figures['macro_f1']) * 100:+.2f} pt"
    )


if __name__ == "__main__":
    main()
