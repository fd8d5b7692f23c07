"""Offline evaluation of a detector on a labelled set: in-scope accuracy, OOS recall, macro-F1, latency."""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sklearn.metrics import classification_report, f1_score

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

    def summary(self) -> dict[str, float | int | None]:
        return {
            "examples": self.examples,
            "in_scope_accuracy": self.in_scope_accuracy,
            "oos_recall": self.oos_recall,
            "macro_f1": self.macro_f1,
            "latency_ms_p50": self.latency_ms_p50,
            "latency_ms_mean": self.latency_ms_mean,
        }


def dataset_read(path: str | Path, *, split: str = "test") -> list[LabelledExample]:
    """Read CLINC150 JSON (`split` plus `oos_<split>`), CSV or JSONL of `message,intent`."""
    path = Path(path)
    if not path.exists():
        raise DatasetFormatError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in {".jsonl", ".ndjson"}:
        return _read_jsonl(path)
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


def _read_csv(path: Path) -> list[LabelledExample]:
    examples = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"message", "intent"} <= set(reader.fieldnames):
            raise DatasetFormatError(f"{path}: line 1: the header must name the columns message and intent")
        for row in reader:
            if not (row.get("message") or "").strip() or not (row.get("intent") or "").strip():
                raise DatasetFormatError(f"{path}: line {reader.line_num}: empty message or intent")
            examples.append(_example(row["message"], row["intent"]))
    return examples


def _read_jsonl(path: Path) -> list[LabelledExample]:
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
        examples.append(_example(row["message"], row["intent"]))
    return examples


def evaluate(
    detect: Callable[[str], str],
    examples: Sequence[LabelledExample],
    *,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
) -> EvaluationReport:
    """Run `detect(message) -> intent` over the examples and score it."""
    if not examples:
        raise DatasetFormatError("No examples to evaluate")
    predictions: list[str] = []
    latencies: list[float] = []
    for example in progress(examples):
        started = time.perf_counter()
        predictions.append(detect(example.message))
        latencies.append((time.perf_counter() - started) * 1000.0)
    return report_build(labels=[e.intent for e in examples], predictions=predictions, latencies_ms=latencies)


def report_build(*, labels: Sequence[str], predictions: Sequence[str], latencies_ms: Sequence[float]) -> EvaluationReport:
    in_scope = [(y, p) for y, p in zip(labels, predictions, strict=True) if y != OUT_OF_SCOPE]
    oos = [p for y, p in zip(labels, predictions, strict=True) if y == OUT_OF_SCOPE]
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
    )
