"""Offline evaluation of a detector on a labelled set: in-scope accuracy, OOS recall, macro-F1, latency."""

from __future__ import annotations

import csv
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sklearn.metrics import classification_report, f1_score

from intentsite.calibration import reliability

from .catalog import OUT_OF_SCOPE

OOS_LABELS = {"oos", OUT_OF_SCOPE}


class DatasetFormatError(ValueError):
    """A labelled file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class LabelledExample:
    message: str
    intent: str  # OUT_OF_SCOPE for out-of-scope


@dataclass
class EvaluationReport:
    examples: int
    in_scope_accuracy: float
    oos_recall: float | None
    macro_f1: float
    latency_ms_p50: float
    latency_ms_mean: float
    per_intent: dict = field(default_factory=dict, repr=False)
    predictions: list[str] = field(default_factory=list, repr=False)
    labels: list[str] = field(default_factory=list, repr=False)
    # The confidences' calibration against right/wrong (when the detector reported confidences).
    ece: float | None = None
    brier: float | None = None

    def summary(self) -> dict[str, float | int | None]:
        return {
            "examples": self.examples,
            "in_scope_accuracy": self.in_scope_accuracy,
            "oos_recall": self.oos_recall,
            "macro_f1": self.macro_f1,
            "latency_ms_p50": self.latency_ms_p50,
            "latency_ms_mean": self.latency_ms_mean,
            "ece": self.ece,
            "brier": self.brier,
        }


def dataset_read(path: str | Path, *, split: str = "test", require_split: bool = False) -> list[LabelledExample]:
    """Read CLINC150 JSON (`split` plus `oos_<split>`), CSV or JSONL of `message,intent`.

    A CSV/JSONL with a `split` column keeps only the rows of `split`; without one, every row is taken,
    unless `require_split` (training needs a train and a validation split that differ).
    """
    path = Path(path)
    if not path.exists():
        raise DatasetFormatError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in {".csv", ".jsonl", ".ndjson"}:
        rows = _read_csv(path) if suffix == ".csv" else _read_jsonl(path)
        if not any(row_split is not None for _, row_split in rows):
            if require_split:
                raise DatasetFormatError(f"{path}: no split column; add one (e.g. train/val) or use CLINC150 JSON")
            return [example for example, _ in rows]
        examples = [example for example, row_split in rows if row_split == split]
        if not examples:
            raise DatasetFormatError(f"{path}: no rows of split {split!r}")
        return examples
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(raw, dict) or split not in raw:
        keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise DatasetFormatError(f"{path}: no split {split!r} (has: {keys})")
    examples = []
    for key in (split, f"oos_{split}"):
        for index, pair in enumerate(raw.get(key, []), start=1):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise DatasetFormatError(f"{path}: {key} item {index}: expected [text, intent], got {pair!r}")
            examples.append(_example(pair[0], pair[1]))
    return examples


def _example(message: str, intent: str) -> LabelledExample:
    intent = intent.strip()
    return LabelledExample(message=message, intent=OUT_OF_SCOPE if intent in OOS_LABELS else intent)


def _read_csv(path: Path) -> list[tuple[LabelledExample, str | None]]:
    examples = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"message", "intent"} <= set(reader.fieldnames):
            raise DatasetFormatError(f"{path}: line 1: the header must name the columns message and intent")
        for row in reader:
            if not (row.get("message") or "").strip() or not (row.get("intent") or "").strip():
                raise DatasetFormatError(f"{path}: line {reader.line_num}: empty message or intent")
            split = (row.get("split") or "").strip() or None if "split" in reader.fieldnames else None
            examples.append((_example(row["message"], row["intent"]), split))
    return examples


def _read_jsonl(path: Path) -> list[tuple[LabelledExample, str | None]]:
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path}: line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("message"), str) or not isinstance(
            row.get("intent"), str
        ):
            raise DatasetFormatError(f"{path}: line {number}: expected an object with string message and intent")
        split = row.get("split")
        if split is not None and not isinstance(split, str):
            raise DatasetFormatError(f"{path}: line {number}: split must be a string")
        examples.append((_example(row["message"], row["intent"]), split))
    return examples


# --- A sample of a labelled set: stratified by intent, out-of-scope its own stratum, seeded -----------


def examples_sample(examples: Sequence[LabelledExample], *, limit: int | None, seed: int = 0) -> list[LabelledExample]:
    """`limit` examples drawn per intent (out_of_scope is a stratum like any intent), in the dataset's order.

    Each stratum gets its proportional share of `limit`, rounded by largest remainder (ties broken by the
    seed), so the sample has exactly `limit` examples; when `limit` >= the number of strata, a stratum whose
    share rounded to 0 gets one example, taken from the stratum furthest above its share. Within a stratum
    the examples are drawn by `random.Random(seed)`: the same dataset, limit and seed give the same sample.
    No limit, or one >= the dataset, gives the whole dataset.

    Not scikit-learn's `train_test_split(stratify=...)`: it leaves intents out (125 of CLINC150's 151 strata
    at 151 examples), refuses a stratum with a single example, and refuses a sample as large as the set.
    """
    if limit is not None and limit < 1:
        raise ValueError("limit must be >= 1")
    if limit is None or limit >= len(examples):
        return list(examples)
    strata: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        strata.setdefault(example.intent, []).append(index)
    rng = random.Random(seed)
    sizes = {name: len(strata[name]) for name in sorted(strata)}
    chosen = [index for name, count in sample_allocation(sizes, limit, rng).items()
              for index in rng.sample(strata[name], count)]
    return [examples[index] for index in sorted(chosen)]


def sample_allocation(sizes: dict[str, int], limit: int, rng: random.Random) -> dict[str, int]:
    """How many examples of each stratum (`sizes`: stratum -> examples) a sample of `limit` takes: the
    largest-remainder rounding of the proportional shares, at least one per stratum when limit >= strata."""
    total = sum(sizes.values())
    names = list(sizes)
    rng.shuffle(names)  # the order ties are broken in (a stable sort keeps it)
    # share of a stratum = limit * size / total, kept as integers: floor and remainder (over `total`)
    allocation = {name: limit * sizes[name] // total for name in names}
    remainder = {name: limit * sizes[name] % total for name in names}
    left = limit - sum(allocation.values())
    for name in sorted(names, key=remainder.__getitem__, reverse=True)[:left]:
        allocation[name] += 1
    if limit >= len(names):
        for name in [name for name in names if allocation[name] == 0]:
            # the donor is the stratum furthest above its share (allocation - share, times `total`)
            donor = max((other for other in names if allocation[other] > 1),
                        key=lambda other: allocation[other] * total - limit * sizes[other])
            allocation[donor] -= 1
            allocation[name] = 1
    return {name: allocation[name] for name in sizes if allocation[name]}


def sample_description(examples: Sequence[LabelledExample], sample: Sequence[LabelledExample], *,
                       limit: int | None, seed: int) -> str:
    """One line saying how `sample` was drawn from `examples` (see `examples_sample`)."""
    if limit is None:
        return f"sample: all {len(examples):,} examples (no limit)"
    if len(sample) == len(examples):
        return f"sample: all {len(examples):,} examples (the limit {limit:,} is not smaller than the set)"
    strata = {e.intent for e in examples}
    kinds = " incl. out_of_scope" if OUT_OF_SCOPE in strata else ", no out_of_scope in the set"
    drawn = len({e.intent for e in sample})
    missing = f"; {len(sample)} < {len(strata)}, only {drawn} represented" if drawn < len(strata) else ""
    return (f"sample: {len(sample):,} of {len(examples):,} examples, stratified by intent "
            f"({len(strata)} strata{kinds}{missing}), seed {seed}")


def evaluate(
    detect: Callable[[str], str | tuple[str, float]],
    examples: Sequence[LabelledExample],
    *,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
) -> EvaluationReport:
    """Run `detect(message) -> intent` (or `(intent, confidence)`: the calibration is scored too) over the examples
    and score it."""
    if not examples:
        raise DatasetFormatError("No examples to evaluate")
    predictions: list[str] = []
    confidences: list[float] = []
    latencies: list[float] = []
    for example in progress(examples):
        started = time.perf_counter()
        answer = detect(example.message)
        latencies.append((time.perf_counter() - started) * 1000.0)
        if isinstance(answer, tuple):
            answer, confidence = answer
            confidences.append(float(confidence))
        predictions.append(answer)
    return report_build(labels=[e.intent for e in examples], predictions=predictions, latencies_ms=latencies,
                        confidences=confidences or None)


def report_build(*, labels: Sequence[str], predictions: Sequence[str], latencies_ms: Sequence[float],
                 confidences: Sequence[float] | None = None) -> EvaluationReport:
    in_scope = [(y, p) for y, p in zip(labels, predictions, strict=True) if y != OUT_OF_SCOPE]
    oos = [p for y, p in zip(labels, predictions, strict=True) if y == OUT_OF_SCOPE]
    calibration = reliability(confidences, [y == p for y, p in zip(labels, predictions, strict=True)]) \
        if confidences else {"ece": None, "brier": None}
    return EvaluationReport(
        examples=len(labels),
        in_scope_accuracy=sum(y == p for y, p in in_scope) / len(in_scope) if in_scope else 0.0,
        oos_recall=sum(p == OUT_OF_SCOPE for p in oos) / len(oos) if oos else None,
        macro_f1=float(f1_score(labels, predictions, average="macro", zero_division=0)),
        latency_ms_p50=statistics.median(latencies_ms) if latencies_ms else 0.0,
        latency_ms_mean=statistics.fmean(latencies_ms) if latencies_ms else 0.0,
        per_intent=classification_report(labels, predictions, output_dict=True, zero_division=0),
        predictions=list(predictions),
        labels=list(labels),
        ece=calibration["ece"],
        brier=calibration["brier"],
    )


# --- What an evaluation run keeps: the per-intent report and the confusion matrix picture -------------


def confusion_pairs(labels: Sequence[str], predictions: Sequence[str]) -> list[dict[str, object]]:
    """Counts of (expected, detected), most frequent first; the diagonal included."""
    counts = Counter(zip(labels, predictions, strict=True))
    return [
        {"expected": expected, "detected": detected, "count": count}
        for (expected, detected), count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def per_intent_report(report: EvaluationReport) -> dict[str, object]:
    """JSON of the evaluation: the summary, per intent precision/recall/F1/support, and the confusions."""
    per_intent = {
        name: {key: (int(value) if key == "support" else float(value)) for key, value in figures.items()}
        for name, figures in report.per_intent.items()
        if isinstance(figures, dict) and name not in {"macro avg", "weighted avg"}
    }
    pairs = confusion_pairs(report.labels, report.predictions)
    return {
        "summary": report.summary(),
        "per_intent": per_intent,
        "confusions": [pair for pair in pairs if pair["expected"] != pair["detected"]],
    }


def confusion_figure(labels: Sequence[str], predictions: Sequence[str], *, max_labelled: int = 30, top: int = 20):
    """A matplotlib Figure of the confusion matrix (no pyplot, so no GUI backend is ever touched).

    Up to `max_labelled` intents: a labelled heatmap. More (CLINC150 has 151 with out_of_scope): the
    row-normalised heatmap without tick labels, beside a bar chart of the `top` most frequent confusions,
    which is what one reads a large matrix for.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix

    names = sorted(set(labels) | set(predictions), key=lambda name: (name == OUT_OF_SCOPE, name))
    matrix = confusion_matrix(labels, predictions, labels=names)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    if len(names) <= max_labelled:
        size = max(4.0, 0.35 * len(names) + 2)
        figure = Figure(figsize=(size + 1, size), dpi=110)
        axes = figure.add_subplot()
        image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        axes.set_yticks(range(len(names)), names, fontsize=7)
        if len(names) <= 15:
            for i in range(len(names)):
                for j in range(len(names)):
                    if matrix[i, j]:
                        axes.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                                  color="white" if normalised[i, j] > 0.5 else "black")
        axes.set_xlabel("detected")
        axes.set_ylabel("expected")
        figure.colorbar(image, ax=axes, fraction=0.046, label="share of the expected intent")
    else:
        figure = Figure(figsize=(16, 8), dpi=110)
        left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.1]})
        image = left.imshow(normalised, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        left.set_xticks([])
        left.set_yticks([])
        left.set_xlabel(f"detected ({len(names)} intents, out_of_scope last)")
        left.set_ylabel("expected")
        figure.colorbar(image, ax=left, fraction=0.046, label="share of the expected intent")
        confusions = [p for p in confusion_pairs(labels, predictions) if p["expected"] != p["detected"]][:top]
        right.barh(range(len(confusions)), [p["count"] for p in confusions], color="tab:red")
        right.set_yticks(range(len(confusions)), [f"{p['expected']} -> {p['detected']}" for p in confusions],
                         fontsize=8)
        right.invert_yaxis()
        right.set_xlabel("examples")
        right.set_title(f"top {len(confusions)} confusions (expected -> detected)")
    figure.suptitle(f"Confusion matrix, {len(labels)} examples")
    figure.tight_layout()
    return figure
