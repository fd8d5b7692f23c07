"""Benchmark: the offline intent model on CLINC150, with and without its sentence encoder, against TF-IDF + LR.

    python bench/local_model.py [--data PATH] [--queries 1000] [--no-baseline] [--ablations]

Protocol (nothing is tuned on test), for each model (the default: n-grams + GloVe + MiniLM; the n-gram model,
INTENT_LOCAL_ENCODER=none; with --ablations: the default without GloVe, and the default scoring out-of-scope
messages by the top probability alone):
1. fit `LocalIntentModel` on `train` only (15,000 in-scope utterances, no oos_train);
2. on `val` (in-scope) fit the softmax temperature; on `val` + `oos_val` choose the out-of-scope threshold
   with `choose_oos_threshold` (largest threshold costing <= 1 point of val in-scope accuracy);
3. report on `test` + `oos_test`: in-scope accuracy (predicted out_of_scope counts as wrong), OOS recall,
   macro-F1 over the 150 intents + out_of_scope, ECE of the confidence on in-scope test (10 bins), and
   single-call predict() latency on one thread (the encoder's sessions use one intra-op thread);
4. the baseline (TF-IDF word 1-2 + char_wb 2-5, LogisticRegression(C=20), threshold 0.15), same process.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

REPO = Path(__file__).resolve().parents[1]
PROJECT_DATA = REPO / "intent" / "data" / "clinc150" / "data_full.json"
SHARED_DATA = Path("/work/shared/data/clinc150/data_full.json")
sys.path.insert(0, str(REPO))


def _load_local_model_module():
    """intent/program/local_model.py (and the modules it imports) on their own: importing the package
    would pull in DSPy. A bare package over the same folder, whose __init__ is not run."""
    package = types.ModuleType("intent_local")
    package.__path__ = [str(REPO / "intent" / "program")]
    sys.modules[package.__name__] = package
    return importlib.import_module("intent_local.local_model")


lm = _load_local_model_module()
tuning = importlib.import_module("intent_local.local_tuning")
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


def ece(model, texts: list[str], labels: list[str]) -> float:
    """Expected calibration error (10 equal-width bins) of the top probability on the in-scope texts."""
    from intentsite.calibration import reliability

    keep = [i for i, label in enumerate(labels) if label != OOS]
    probabilities = model.predict_proba([texts[i] for i in keep])
    top = probabilities.argmax(axis=1)
    correct = np.asarray(model.intents, dtype=object)[top] == np.asarray([labels[i] for i in keep], dtype=object)
    return float(reliability(probabilities.max(axis=1), correct, bins=10)["ece"])


def latency_ms(predict_one, queries: list[str]) -> tuple[float, float]:
    return interleaved_latency_ms({"one": predict_one}, queries)["one"]


def interleaved_latency_ms(predictors: dict, queries: list[str], block: int = 50) -> dict[str, tuple[float, float]]:
    """(median, p99) ms of single calls per predictor, timed in turns of `block` queries so that every predictor
    sees the same machine (on a shared machine the absolute times drift by tens of percent within minutes)."""
    for predict_one in predictors.values():
        for q in queries[:50]:  # warm-up
            predict_one(q)
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for start in range(0, len(queries), block):
        for name, predict_one in predictors.items():
            for q in queries[start : start + block]:
                started = time.perf_counter()
                predict_one(q)
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: (float(np.median(t)), float(np.percentile(t, 99))) for name, t in times.items()}


def line(name: str, figures: dict[str, float]) -> str:
    return (
        f"{name:<44} in-scope acc {figures['in_scope_accuracy'] * 100:6.2f} %   "
        f"OOS recall {figures['oos_recall'] * 100:6.2f} %   macro-F1 {figures['macro_f1'] * 100:6.2f} %"
    )


class PlainScore:
    """The ablation "top probability alone": the fitted model, its out-of-scope score replaced by the top
    probability (what the n-gram model uses)."""

    def __init__(self, model) -> None:
        self.model, self.intents, self.config = model, model.intents, model.config

    def scored(self, texts):
        probabilities = self.model.predict_proba(texts)
        return probabilities, probabilities.max(axis=1)

    def predict_proba(self, texts):
        return self.model.predict_proba(texts)

    def with_threshold(self, threshold):
        wrapped = PlainScore(self.model)
        wrapped.config = replace(self.config, oos_threshold=threshold)
        return wrapped

    def with_temperature(self, temperature):
        return PlainScore(self.model.with_temperature(temperature))

    def decision_scores(self, texts):
        return self.model.decision_scores(texts)

    def predict_many(self, texts):
        probabilities = self.model.predict_proba(texts)
        top = probabilities.argmax(axis=1)
        return [types.SimpleNamespace(intent=self.intents[i] if row[i] >= self.config.oos_threshold else OOS)
                for i, row in zip(top, probabilities, strict=True)]


class EmbeddingMemo:
    """The accuracy passes embed the same val and test texts a dozen times: here each text is embedded once, on
    every core (an embedding depends on its text alone: `SentenceEncoder.embed`). Latency is timed without it."""

    def __init__(self, config) -> None:
        self.encoder = lm.encoder_load(config.encoder) if config.encoder else None

    def __enter__(self) -> None:
        if self.encoder is None:
            return
        original, memo = self.encoder.embed, {}

        def embed(texts, workers=1):
            missing = [text for text in dict.fromkeys(texts) if text not in memo]
            if missing:
                memo.update(zip(missing, original(missing, workers=os.cpu_count() or 1), strict=True))
            return np.stack([memo[text] for text in texts]) if len(texts) else original(texts)

        self.encoder.embed = embed

    def __exit__(self, *exc) -> None:
        if self.encoder is not None:
            del self.encoder.embed


def evaluate_model(name: str, config, data, *, plain_score: bool = False) -> dict:
    train_x, train_y = data["train"]
    print(f"\n== {name}\nconfig {json.dumps(config.as_dict())}")
    wall, cpu = time.perf_counter(), time.process_time()
    model = lm.LocalIntentModel.fit(train_x, train_y, config)
    fit_s, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"fit: {fit_s:.2f} s wall ({fit_cpu:.2f} s CPU), {len(model.intents)} intents")
    scored = PlainScore(model) if plain_score else model
    with EmbeddingMemo(config):
        test_figures, calibration = _accuracy(model, scored, config, data, plain_score=plain_score)
    return {"name": name, "model": model, "fit_s": fit_s, "test": test_figures, "ece": calibration}


def _accuracy(model, scored, config, data, *, plain_score: bool) -> tuple[dict, float]:
    val_x, val_y = data["val"]
    test_x, test_y = data["test"]

    in_scope_val = [i for i, y in enumerate(val_y) if y != OOS]
    temperature = tuning.fit_temperature(scored, [val_x[i] for i in in_scope_val], [val_y[i] for i in in_scope_val])
    tuned = scored.with_temperature(temperature)
    threshold = tuning.choose_oos_threshold(tuned, val_x, val_y, min_in_scope_accuracy_drop=0.01)
    tuned = tuned.with_threshold(threshold)
    print(
        f"chosen on val: temperature {temperature:.4f} (shipped {config.temperature}), "
        f"oos_threshold {threshold:.4f} (shipped {config.oos_threshold})"
    )
    val_figures = scores(val_y, [p.intent for p in tuned.predict_many(val_x)], model.intents)
    print(line("val   (val-tuned T + threshold)", val_figures))
    no_threshold_val = scores(val_y, [p.intent for p in tuned.with_threshold(0.0).predict_many(val_x)], model.intents)
    print(line("val   no threshold", no_threshold_val))
    test_figures = scores(test_y, [p.intent for p in tuned.predict_many(test_x)], model.intents)
    print(line("TEST  val-tuned", test_figures))
    if not plain_score:
        shipped = scores(test_y, [p.intent for p in model.predict_many(test_x)], model.intents)
        print(line("TEST  shipped defaults", shipped))
    no_threshold = scores(test_y, [p.intent for p in tuned.with_threshold(0.0).predict_many(test_x)], model.intents)
    print(line("TEST  no threshold", no_threshold))
    calibration = ece(tuned, test_x, test_y)
    print(f"TEST  ECE (in-scope, 10 bins): {calibration * 100:.2f} %")
    return test_figures, calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = PROJECT_DATA if PROJECT_DATA.exists() else SHARED_DATA
    parser.add_argument("--data", type=Path, default=default, help=f"CLINC150 data_full.json (default {default})")
    parser.add_argument("--queries", type=int, default=1000, help="single predict() calls timed")
    parser.add_argument("--no-baseline", action="store_true", help="skip the logistic-regression baseline")
    parser.add_argument("--ablations", action="store_true",
                        help="also: the default without GloVe, and scoring out-of-scope by the top probability alone")
    args = parser.parse_args()

    raw = json.loads(args.data.read_text())
    data = {name: split(raw, name) for name in ("train", "val", "test")}
    train_x, train_y = data["train"]
    test_x, test_y = data["test"]
    rng = np.random.default_rng(0)
    queries = [test_x[i] for i in rng.permutation(len(test_x))[: args.queries]]
    print(
        f"data {args.data}: train {len(train_x)}, val {len(data['val'][0])}, test {len(test_x)} "
        f"({sum(y == OOS for y in test_y)} out-of-scope)"
    )

    evaluated = [
        evaluate_model("default: n-grams + GloVe + MiniLM encoder", lm.LocalModelConfig(), data),
        evaluate_model("n-gram model (INTENT_LOCAL_ENCODER=none)", lm.LocalModelConfig.for_encoder(None), data),
    ]
    if args.ablations:
        evaluated.append(evaluate_model("ablation: encoder, no GloVe", lm.LocalModelConfig(word_vectors=None), data))
    latency = interleaved_latency_ms({e["name"]: e["model"].predict for e in evaluated}, queries)
    print(f"\npredict() on one thread, {len(queries)} single calls each, in turns of 50:")
    for e in evaluated:
        e["p50"], e["p99"] = latency[e["name"]]
        print(f"  {e['name']:<44} median {e['p50']:.3f} ms, p99 {e['p99']:.3f} ms")
    if args.ablations:  # same model and cost as the default: only its answers differ
        evaluate_model("ablation: encoder, out-of-scope by top probability alone", lm.LocalModelConfig(), data,
                       plain_score=True)
    default, ngrams = evaluated[0], evaluated[1]
    d, n = default["test"], ngrams["test"]
    print(
        "\ndefault / n-gram model: "
        f"fit x{default['fit_s'] / ngrams['fit_s']:.2f}, predict median x{default['p50'] / ngrams['p50']:.2f} "
        f"(+{default['p50'] - ngrams['p50']:.2f} ms), "
        f"in-scope acc {(d['in_scope_accuracy'] - n['in_scope_accuracy']) * 100:+.2f} pt, "
        f"OOS recall {(d['oos_recall'] - n['oos_recall']) * 100:+.2f} pt, "
        f"macro-F1 {(d['macro_f1'] - n['macro_f1']) * 100:+.2f} pt, "
        f"ECE {default['ece'] * 100:.2f} % vs {ngrams['ece'] * 100:.2f} %"
    )
    fit_s, p50, test_figures = default["fit_s"], default["p50"], default["test"]

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
    print(line("TEST  baseline LR, no threshold", scores(test_y, list(baseline.predict(test_x)), baseline.classes_)))
    proba = baseline.predict_proba(test_x)
    base_015 = np.where(proba.max(axis=1) < 0.15, OOS, baseline.classes_[proba.argmax(axis=1)])
    base_figures = scores(test_y, list(base_015), baseline.classes_)
    print(line("TEST  baseline LR, threshold 0.15", base_figures))
    b50, b99 = latency_ms(lambda q: baseline.predict([q]), queries)
    print(f"baseline predict([q]): median {b50:.3f} ms, p99 {b99:.3f} ms")

    print(
        "default / baseline (threshold 0.15): "
        f"fit time x{fit_s / base_fit_s:.2f}, predict median x{p50 / b50:.2f}, "
        f"in-scope acc {(test_figures['in_scope_accuracy'] - base_figures['in_scope_accuracy']) * 100:+.2f} pt, "
        f"OOS recall {(test_figures['oos_recall'] - base_figures['oos_recall']) * 100:+.2f} pt, "
        f"macro-F1 {(test_figures['macro_f1'] - base_figures['macro_f1']) * 100:+.2f} pt"
    )


if __name__ == "__main__":
    main()
