"""Optimizing the intent program on labelled data, Django-free (usable from a notebook as well).

LM backend: a DSPy optimizer (LabeledFewShot, BootstrapFewShot, MIPROv2 light) compiles
`LMIntentDetector` on a training split; the catalog is bound to the program while compiling, so a
training example is just `message -> intent`. Bootstrapped demos keep the message, the context and the
answers but not the catalog and template lists: those are the same in every call and already in the
prompt, and repeating them per demo would multiply the prompt size by the number of demos.

Local backend (no LM to prompt), the honest equivalent: refit the local model on the catalog's
examples plus the training split's in-scope examples, and re-choose its out-of-scope threshold on the
validation split (`choose_oos_threshold`).

Both are scored before and after on the validation split with the same `evaluate`; the score is the
share of validation examples answered right (out-of-scope included). The result `improved` only when it
answers strictly more of them right than before: a tie is no gain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy

from .catalog import OUT_OF_SCOPE, Catalog
from .evaluation import EvaluationReport, LabelledExample, evaluate
from .lm_detector import LMIntentDetector
from .local_model import LocalIntentModel
from .local_tuning import choose_oos_threshold

OPTIMIZERS = ("bootstrap", "mipro", "labeled")
CATALOG_INPUTS = ("intent_catalog", "workflow_templates", "agent_templates")


class OptimizationError(ValueError):
    """The labelled data cannot be used to optimize (empty split, unknown intents, ...)."""


class CatalogBoundDetector(dspy.Module):
    """`LMIntentDetector` with its catalog bound: called with a message (and context) only."""

    def __init__(self, catalog: Catalog, program: LMIntentDetector | None = None) -> None:
        super().__init__()
        self.program = program or LMIntentDetector()
        self.catalog = catalog

    def forward(self, message: str, user_role: str = "", current_module: str = "",
                current_tab: str = "") -> dspy.Prediction:
        return self.program(message=message, catalog=self.catalog, user_role=user_role,
                            current_module=current_module, current_tab=current_tab)


def dspy_examples(examples: Sequence[LabelledExample]) -> list[dspy.Example]:
    return [dspy.Example(message=e.message, intent=e.intent).with_inputs("message") for e in examples]


def intent_match(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
    return getattr(prediction, "intent", None) == example.intent


def correct(report: EvaluationReport) -> int:
    """Examples answered right, out-of-scope included."""
    return sum(y == p for y, p in zip(report.labels, report.predictions, strict=True))


def accuracy(report: EvaluationReport) -> float:
    """Share of the examples answered right, out-of-scope included."""
    return correct(report) / len(report.labels)


@dataclass
class OptimizationResult:
    optimizer: str
    params: dict[str, Any]
    before: EvaluationReport
    after: EvaluationReport
    program: LMIntentDetector | None = None  # LM backend
    local_model: LocalIntentModel | None = None  # local backend
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def score_before(self) -> float:
        return accuracy(self.before)

    @property
    def score_after(self) -> float:
        return accuracy(self.after)

    @property
    def improved(self) -> bool:
        """Strictly better on the validation split; a tie is no gain, so not an improvement."""
        return correct(self.after) > correct(self.before)


def optimizer_build(name: str, *, lm: dspy.LM | None = None, max_demos: int = 4, num_threads: int = 1, seed: int = 0):
    """The DSPy optimizer called `name`, and the parameters it was given (for tracking). MIPROv2 proposes
    instructions with `lm` too (DSPy's settings are never configured globally here)."""
    if name == "labeled":
        params = {"k": max_demos}
        return dspy.LabeledFewShot(**params), params
    if name == "bootstrap":
        params = {"max_bootstrapped_demos": max_demos, "max_labeled_demos": max_demos, "max_rounds": 1}
        return dspy.BootstrapFewShot(metric=intent_match, **params), params
    if name == "mipro":
        params = {"auto": "light", "max_bootstrapped_demos": max_demos, "max_labeled_demos": max_demos,
                  "num_threads": num_threads, "seed": seed}
        return dspy.MIPROv2(metric=intent_match, prompt_model=lm, task_model=lm, verbose=False, **params), params
    raise OptimizationError(f"Unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")


def lm_program_optimize(
    *,
    catalog: Catalog,
    lm: dspy.LM,
    adapter: dspy.Adapter,
    optimizer: str,
    train: Sequence[LabelledExample],
    val: Sequence[LabelledExample],
    base_program: LMIntentDetector | None = None,
    max_demos: int = 4,
    num_threads: int = 1,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
) -> OptimizationResult:
    """Compile the LM program with a DSPy optimizer on `train`; score it before and after on `val`."""
    _check(catalog, train, val)
    teleprompter, params = optimizer_build(optimizer, lm=lm, max_demos=max_demos, num_threads=num_threads)
    student = CatalogBoundDetector(catalog, (base_program or LMIntentDetector()).deepcopy())
    with dspy.context(lm=lm, adapter=adapter):
        before = evaluate(lambda message: student(message=message).intent, val, progress=progress)
        trainset = dspy_examples(train)
        if optimizer == "mipro":
            compiled = teleprompter.compile(student, trainset=trainset, valset=dspy_examples(val))
        else:
            compiled = teleprompter.compile(student, trainset=trainset)
        program = compiled.program
        demos_compact(program)
        after = evaluate(lambda message: CatalogBoundDetector(catalog, program)(message=message).intent, val,
                         progress=progress)
    return OptimizationResult(optimizer=optimizer, params=params, before=before, after=after, program=program,
                              notes={"demos": sum(len(p.demos) for _, p in program.named_predictors())})


def demos_compact(program: dspy.Module) -> None:
    """Drop the catalog and template lists from bootstrapped demos (see the module docstring)."""
    for _, predictor in program.named_predictors():
        compact = []
        for demo in predictor.demos:
            data = dict(demo.items()) if hasattr(demo, "items") else dict(demo)
            for key in CATALOG_INPUTS:
                data.pop(key, None)
            compact.append(dspy.Example(**data))
        predictor.demos = compact


def local_model_optimize(
    *,
    catalog: Catalog,
    base_model: LocalIntentModel,
    train: Sequence[LabelledExample],
    val: Sequence[LabelledExample],
    min_in_scope_accuracy_drop: float = 0.01,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
) -> OptimizationResult:
    """Refit the local model on catalog + in-scope training examples; re-choose its OOS threshold on `val`."""
    _check(catalog, train, val)
    added = [e for e in train if e.intent != OUT_OF_SCOPE]
    texts, labels = catalog.training_data()
    model = LocalIntentModel.fit(texts + [e.message for e in added], labels + [e.intent for e in added],
                                 base_model.config)
    threshold = choose_oos_threshold(model, [e.message for e in val], [e.intent for e in val],
                                     min_in_scope_accuracy_drop=min_in_scope_accuracy_drop)
    model = model.with_threshold(threshold)
    model.extra_training = training_version(added)
    before = evaluate(lambda message: base_model.predict(message).intent, val, progress=progress)
    after = evaluate(lambda message: model.predict(message).intent, val, progress=progress)
    params = {"added_examples": len(added), "min_in_scope_accuracy_drop": min_in_scope_accuracy_drop,
              "oos_threshold_before": base_model.config.oos_threshold, "oos_threshold": threshold}
    return OptimizationResult(optimizer="local-refit", params=params, before=before, after=after, local_model=model)


def training_version(examples: Sequence[LabelledExample]) -> str:
    """A short hash of extra training examples (part of a refitted local model's prompt_version)."""
    payload = json.dumps(sorted([e.message, e.intent] for e in examples), ensure_ascii=False).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def _check(catalog: Catalog, train: Sequence[LabelledExample], val: Sequence[LabelledExample]) -> None:
    if not train:
        raise OptimizationError("The training split has no examples")
    if not val:
        raise OptimizationError("The validation split has no examples")
    unknown = sorted({e.intent for e in [*train, *val] if e.intent != OUT_OF_SCOPE and catalog.get(e.intent) is None})
    if unknown:
        raise OptimizationError(f"Intents not in the active catalog: {', '.join(unknown[:10])}"
                                + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""))
