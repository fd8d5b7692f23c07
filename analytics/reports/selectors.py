"""The analytics reports (contract A): overview, trends, errors, model comparison, prompt analysis, the
combined report and the feedback confusion matrix, as plain dicts, from the mirror's daily rollups.

Where the numbers come from:

- Without filters, everything is read from `DailyRollup` (days × values of one dimension): the cost
  depends on the period and the number of values, never on the number of runs.
- One filter alone (e.g. `module=banking`): totals and per-day series come from that dimension's own
  rollup cells (value `banking`), as fast as the unfiltered path; a breakdown along the filter's own
  dimension (model-comparison under `model_name=...`) too.
- Anything else (a breakdown under a filter, or several filters) reads the period's matching `MirroredRun` rows
  once and aggregates them with the rollups' own code (`analytics.mirror.rollups.runs_aggregate`), so both paths
  give the same numbers: slower (see bench/analytics.py), but exact, with no extra rollup grain to keep up to date
  on every sync.
- Errors' by-type counts come from the `error_type` rollups; their sample run ids and the latest failing
  runs from the newest failing runs alone (partial index `mirroredrun_failing`, read backwards, LIMIT); the
  confusion matrix reads the labelled runs alone (`mirroredrun_labelled`).
- Percentiles come from the merged latency sketches (`analytics.mirror.sketch`): nearest-rank, within 1 % of exact and
  never outside the observed [min, max] of their group.
- The free-text context (role, module, tab) keeps each day's most frequent values in the rollups and rolls the
  rest up as `other`; a single filter on such a dimension reads the raw rows when any day of the period folded.

The views cache each answer until the next sync finishes (`scope.answer_cached`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils.module_loading import import_string

from intentsite import contract

from ..models import OTHER, DailyRollup, MirroredRun, SyncState, compound_parts, compound_value
from .cells import Cell, Cells, ratio
from .scope import Scope
from .sql import sql_datetime, sql_rows

Dimension = DailyRollup.Dimension

LATEST_FAILING = 20
TOP_ERROR_TYPES = 20
SAMPLE_WINDOW = 200  # newest failing runs read for the error types' samples


def _days(scope: Scope) -> Iterable[date]:
    for offset in range(scope.days):
        yield scope.since + timedelta(days=offset)


def _shares(cells: dict[Any, Cell], total: int, name: str, *, top: int | None = None) -> list[dict[str, Any]]:
    """Each value's runs and share, most runs first; with `top`, the values beyond it as one `other` entry (the
    period's union of each day's most frequent values can still be long)."""
    ordered = sorted(cells.values(), key=lambda c: (-c.runs, c.key))
    counts = [(cell.key, cell.runs) for cell in ordered]
    if top is not None and len(counts) > top:
        kept, rest = counts[:top], counts[top:]
        other = sum(runs for _, runs in rest) + sum(runs for key, runs in kept if key == OTHER)
        counts = sorted([(key, runs) for key, runs in kept if key != OTHER] + [(OTHER, other)],
                        key=lambda item: (-item[1], item[0]))
    return [{name: key, "runs": runs, "share": ratio(runs, total)} for key, runs in counts]


# --- The reports --------------------------------------------------------------------------------------

OVERVIEW_COUNTED = (Dimension.INTENT, Dimension.ROLE, Dimension.MODULE)


def _overview(cells: Cells) -> dict[str, Any]:
    total = cells.total()
    runs = total.runs
    return {
        "total_runs": runs,
        "success_rate": total.success_rate,
        "error_rate": total.error_rate,
        "avg_confidence": total.avg_confidence,
        "response_time_ms": {"avg": total.avg_ms, "p50": total.percentile(0.5), "p95": total.percentile(0.95),
                             "p99": total.percentile(0.99)},
        "template_match_rate": ratio(total.template_matches, runs),
        "out_of_scope_rate": ratio(total.out_of_scope, runs),
        "fallback_rate": ratio(total.fallbacks, runs),
        "tokens": {"prompt": total.prompt_tokens, "completion": total.completion_tokens,
                   "total": total.prompt_tokens + total.completion_tokens},
        "cost_usd": total.cost_usd,
        "labelled_runs": total.labelled,
        "accuracy": total.accuracy,
        "sampled_accuracy": _sampled_accuracy(cells.scope),
        "intent_distribution": _shares(cells.by_value(Dimension.INTENT), runs, "intent"),
        "user_roles": _shares(cells.by_value(Dimension.ROLE), runs, "user_role", top=settings.ANALYTICS_ROLLUP_TOP_VALUES),
        "modules": _shares(cells.by_value(Dimension.MODULE), runs, "module", top=settings.ANALYTICS_ROLLUP_TOP_VALUES),
    }


def overview_get(*, scope: Scope) -> dict[str, Any]:
    """Totals of the period: volume, rates, latency (avg and percentiles), tokens and cost, accuracy (of all labels,
    and of the review queue's random samples alone, unbiased), and the distribution of intents, roles and modules."""
    return scope.header() | _overview(Cells(scope, detailed=[Dimension.ALL], shares=OVERVIEW_COUNTED))


# Labels on the review queue's random samples: a function of the intent app by dotted path (analytics does not
# import intent's models); override with the ANALYTICS_SAMPLED_ACCURACY setting.
SAMPLED_ACCURACY = "intent.review.selectors.review_accuracy_get"


def _sampled_accuracy(scope: Scope) -> dict[str, Any]:
    read = import_string(getattr(settings, "ANALYTICS_SAMPLED_ACCURACY", SAMPLED_ACCURACY))
    return read(since=scope.start(), until=scope.last_moment(), filters=dict(scope.filters))


def _trend_rows(scope: Scope, daily: dict[date, Cell]) -> list[dict[str, Any]]:
    rows = []
    for day in _days(scope):
        cell = daily.get(day) or Cell(key=day)
        rows.append({"day": day.isoformat(), "runs": cell.runs, "success_rate": cell.success_rate,
                     "avg_confidence": cell.avg_confidence, "p50_ms": cell.percentile(0.5),
                     "p95_ms": cell.percentile(0.95), "out_of_scope_rate": ratio(cell.out_of_scope, cell.runs),
                     "error_rate": cell.error_rate})
    return rows


def trends_get(*, scope: Scope) -> dict[str, Any]:
    """One row per calendar day of the period, oldest first; days without runs have runs 0 and nulls."""
    return scope.header() | {"days": _trend_rows(scope, Cells(scope, detailed=[Dimension.ALL]).by_day())}


def mlflow_run_url(*, experiment_id: str, run_id: str) -> str | None:
    base = settings.MLFLOW_UI_URL
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else None


def _rows(query: QuerySet) -> list[tuple]:
    """A query's rows as the database driver gives them (`sql.sql_rows`: no field converters)."""
    return sql_rows(*query.query.sql_with_params())


def _errors(cells: Cells) -> dict[str, Any]:
    scope, daily = cells.scope, cells.by_day()
    runs = sum(cell.runs for cell in daily.values())
    errors = sum(cell.errors for cell in daily.values())
    by_category = cells.by_value(Dimension.ERROR_CATEGORY)
    failing = scope.raw_runs(by_start_time=True).filter(is_error=True).order_by("-start_time")
    # The latest failing runs, and a sample (the latest run) of each frequent error type: the types and
    # their counts come from the rollups; the samples from the newest failing runs (a short walk down
    # the failing runs' index), or for a type not among them, its own newest run. One read of the newest
    # SAMPLE_WINDOW (or LATEST_FAILING), as tuples from the driver: no ORM converters (~0.3 ms less on SQLite), on
    # PostgreSQL no Django timestamp loader (~0.8 ms less, measured).
    recent = _rows(failing.values_list("error_category", "error_type", "run_id", "request_id", "start_time",
                                       "experiment_id")[:max(SAMPLE_WINDOW, LATEST_FAILING)])
    types = sorted((cell for cell in cells.by_value(Dimension.ERROR_TYPE).values() if cell.key and cell.errors),
                   key=lambda c: (-c.errors, c.key))[:TOP_ERROR_TYPES]
    samples: dict[str, dict[str, Any]] = {}
    for category, error_type, run_id, *_ in recent[:SAMPLE_WINDOW]:
        samples.setdefault(compound_value(category, error_type), {"run_id": run_id})
    by_type = []
    for cell in types:  # each (category, type) pair on a row of its own
        category, error_type = compound_parts(cell.key)
        sample = samples.get(cell.key) or failing.filter(error_category=category, error_type=error_type).values(
            "run_id").first()
        by_type.append({"error_type": error_type, "error_category": category, "count": cell.errors,
                        "sample_run_id": sample["run_id"] if sample else None})
    return {
        "total_errors": errors,
        "error_rate": ratio(errors, runs),
        # count: runs of the category that failed; fallbacks: runs of the category the local backend saved.
        "by_category": [{"error_category": cell.key, "count": cell.errors, "fallbacks": cell.fallbacks,
                         "runs": cell.runs}
                        for cell in sorted(by_category.values(), key=lambda c: (-c.errors, -c.runs, c.key))
                        if cell.key and (cell.errors or cell.fallbacks)],
        "by_type": by_type,
        "per_day": [{"day": day.isoformat(), "runs": (daily.get(day) or Cell(key=day)).runs,
                     "errors": (daily.get(day) or Cell(key=day)).errors,
                     "error_rate": (daily.get(day) or Cell(key=day)).error_rate} for day in _days(scope)],
        "latest": [{"run_id": run_id, "request_id": request_id, "start_time": sql_datetime(start_time),
                    "error_category": category, "error_type": error_type,
                    "mlflow_url": mlflow_run_url(experiment_id=experiment_id, run_id=run_id)}
                   for category, error_type, run_id, request_id, start_time, experiment_id in recent[:LATEST_FAILING]],
    }


def errors_get(*, scope: Scope) -> dict[str, Any]:
    """Failing runs of the period: by category (rollups), by type with a sample run id and the latest ones
    (the failing runs alone, through their partial index), and the error rate per day."""
    return scope.header() | _errors(Cells(scope, detailed=[Dimension.ALL],
                                          counted=[Dimension.ERROR_CATEGORY, Dimension.ERROR_TYPE]))


def _answers(cell: Cell | None) -> dict[str, Any]:
    cell = cell or Cell(key=None)
    return {"runs": cell.runs, "avg_confidence": cell.avg_confidence, "avg_ms": cell.avg_ms,
            "p50_ms": cell.percentile(0.5), "p95_ms": cell.percentile(0.95), "labelled_runs": cell.labelled,
            "accuracy": cell.accuracy}


def _model_comparison(cells: Cells) -> list[dict[str, Any]]:
    """Per configured model: its volume, errors, fallbacks, tokens and accuracy over all its runs, and the
    answers split by who gave them: the model itself (`own_answers`, what its confidence and latency mean)
    and the local backend after the model failed (`fallback_answers`). A run mirrored without `answered_by`
    (tracked before it existed) counts as the model's own."""
    models: dict[str, Cell] = {}  # each model's runs: those of its (model, answered by) pairs together, exactly
    own: dict[str, Cell] = {}
    fallback: dict[str, Cell] = {}
    for key, cell in cells.by_value(Dimension.MODEL_ANSWER).items():
        model_name, answered_by = compound_parts(key)
        target = own if answered_by in (model_name, "") else fallback
        target.setdefault(model_name, Cell(key=model_name)).add(cell)
        models.setdefault(model_name, Cell(key=model_name)).add(cell)
    rows = []
    for cell in sorted(models.values(), key=lambda c: (-c.runs, c.key)):
        mine = own.get(cell.key) or Cell(key=cell.key)
        rows.append({
            "model_name": cell.key, "runs": cell.runs, "success_rate": cell.success_rate,
            "lm_success_rate": ratio(mine.runs - mine.errors, cell.runs),
            "fallback_rate": ratio(cell.fallbacks, cell.runs), "error_rate": cell.error_rate,
            "avg_confidence": mine.avg_confidence, "avg_ms": mine.avg_ms, "p50_ms": mine.percentile(0.5),
            "p95_ms": mine.percentile(0.95), "prompt_tokens": cell.prompt_tokens,
            "completion_tokens": cell.completion_tokens, "cost_usd": cell.cost_usd, "labelled_runs": cell.labelled,
            "accuracy": cell.accuracy, "own_answers": _answers(mine), "fallback_answers": _answers(fallback.get(cell.key)),
        })
    return rows


# Read per value over the whole period, summed by the database (the model comparison and the prompt analysis show
# no series): a few rows, not one per day and value. (A model's totals are those of its `model_answer` values.)
BY_VERSION_AND_MODEL = [Dimension.MODEL_ANSWER, Dimension.PROMPT_VERSION]
# Those whose percentiles are shown (a model's latency is that of its own answers: `model_answer`).
SKETCHED = [Dimension.MODEL_ANSWER, Dimension.PROMPT_VERSION]


def model_comparison_get(*, scope: Scope) -> dict[str, Any]:
    """Per configured model: volume, success of the model itself, fallbacks, tokens, cost and accuracy, with
    confidence and latency of its own answers apart from the fallback answers; most runs first."""
    return scope.header() | {"models": _model_comparison(Cells(scope, totalled=BY_VERSION_AND_MODEL[:1],
                                                                 sketches=SKETCHED))}


def evaluations_latest_get(*, prompt_versions: Iterable[str] | None = None,
                           experiment_ids: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Per prompt version, its latest finished evaluation run (contract C), from the mirror of the
    evaluation experiment (the beat sync mirrors it; a request never asks MLflow). `experiment_ids`: the mirrored
    experiments' ids by name, if already read (a report's scope has them)."""
    name = settings.ANALYTICS_EVALUATION_EXPERIMENT_NAME
    if experiment_ids is None:
        experiment_ids = dict(SyncState.objects.filter(experiment_name=name).values_list("experiment_name",
                                                                                       "experiment_id"))
    if not experiment_ids.get(name):
        return {}
    rows = MirroredRun.objects.filter(experiment_id=experiment_ids[name], status="FINISHED")
    if prompt_versions is not None:
        rows = rows.filter(prompt_version__in=list(prompt_versions))
    latest: dict[str, dict[str, Any]] = {}
    for row in rows.order_by("-start_time", "-run_id").values(
            "run_id", "prompt_version", "metrics", "tags", "start_time", "end_time")[:5000]:
        if row["prompt_version"] in latest or row["tags"].get(contract.RUN_KIND, "evaluation") != "evaluation":
            continue
        metrics = row["metrics"]
        examples = metrics.get(contract.EXAMPLES)
        latest[row["prompt_version"]] = {
            "run_id": row["run_id"],
            **{name: metrics.get(name) for name in contract.EVALUATION_METRICS if name != contract.EXAMPLES},
            "examples": None if examples is None else int(examples),
            "evaluated_at": row["end_time"] or row["start_time"],
        }
    return latest


def _prompt_analysis(cells: Cells) -> list[dict[str, Any]]:
    by_version = cells.by_value(Dimension.PROMPT_VERSION)
    evaluations = (evaluations_latest_get(prompt_versions=list(by_version), experiment_ids=cells.scope.experiment_ids)
                   if by_version else {})
    ordered = sorted(by_version.values(), key=lambda c: (c.last_start_time or datetime.min.replace(tzinfo=UTC),
                                                         c.key), reverse=True)
    return [{"prompt_version": cell.key, "first_seen": cell.first_start_time, "last_seen": cell.last_start_time,
             "runs": cell.runs, "avg_confidence": cell.avg_confidence, "avg_ms": cell.avg_ms,
             "p95_ms": cell.percentile(0.95), "error_rate": cell.error_rate,
             "out_of_scope_rate": ratio(cell.out_of_scope, cell.runs), "labelled_runs": cell.labelled,
             "accuracy": cell.accuracy, "evaluation": evaluations.get(cell.key)} for cell in ordered]


def prompt_analysis_get(*, scope: Scope) -> dict[str, Any]:
    """Per prompt version (newest first, by last run): first and last run of the period, volume, confidence,
    latency, error and out-of-scope rates, accuracy, and its latest offline evaluation."""
    return scope.header() | {"versions": _prompt_analysis(Cells(scope, totalled=BY_VERSION_AND_MODEL[1:],
                                                                  sketches=True))}


def _sla(daily: dict[date, Cell]) -> dict[str, Any]:
    p95_target, error_target = settings.ANALYTICS_SLA_P95_MS, settings.ANALYTICS_SLA_ERROR_RATE
    with_runs = [cell for cell in daily.values() if cell.runs]
    meeting_p95 = sum(1 for cell in with_runs if (cell.percentile(0.95) or 0.0) <= p95_target)
    meeting_errors = sum(1 for cell in with_runs if cell.error_rate <= error_target)
    return {"p95_ms_target": p95_target, "error_rate_target": error_target, "days_with_runs": len(with_runs),
            "days_meeting_p95": meeting_p95, "days_meeting_error_rate": meeting_errors,
            "share_meeting_p95": ratio(meeting_p95, len(with_runs)),
            "share_meeting_error_rate": ratio(meeting_errors, len(with_runs))}


def report_get(*, scope: Scope) -> dict[str, Any]:
    """Everything above in one document (each part without its own period and filters), plus the SLA lines:
    how many days with runs had p95 ≤ ANALYTICS_SLA_P95_MS and error rate ≤ ANALYTICS_SLA_ERROR_RATE."""
    cells = Cells(scope, detailed=[Dimension.ALL], totalled=BY_VERSION_AND_MODEL, sketches=SKETCHED,
                  counted=[Dimension.ERROR_CATEGORY, Dimension.ERROR_TYPE], shares=OVERVIEW_COUNTED)
    daily = cells.by_day()
    return scope.header() | {
        "overview": _overview(cells),
        "trends": {"days": _trend_rows(scope, daily)},
        "errors": _errors(cells),
        "model_comparison": {"models": _model_comparison(cells)},
        "prompt_analysis": {"versions": _prompt_analysis(cells)},
        "sla": _sla(daily),
    }


def confusion_get(*, scope: Scope) -> dict[str, Any]:
    """The labelled runs of the period (feedback): accuracy, the confusion counts expected × detected, and
    per intent precision, recall, F1 and support. Read from the labelled rows alone (few; partial index
    `mirroredrun_labelled`): a matrix per day in the rollups would grow with intents², not pay off."""
    labelled = scope.raw_runs().filter(is_correct__isnull=False)
    matrix = [{"expected": row["expected_intent"] or "", "detected": row["detected_intent"], "count": row["count"]}
              for row in labelled.values("expected_intent", "detected_intent").annotate(count=Count("id"))
              .order_by("expected_intent", "detected_intent")]
    totals = labelled.aggregate(labelled=Count("id"), correct=Count("id", filter=Q(is_correct=True)))
    support: Counter[str] = Counter()
    detected: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    for cell in matrix:
        support[cell["expected"]] += cell["count"]
        detected[cell["detected"]] += cell["count"]
        if cell["expected"] == cell["detected"]:
            hits[cell["expected"]] += cell["count"]
    per_intent = []
    for intent in sorted(set(support) | set(detected)):
        precision = ratio(hits[intent], detected[intent])
        recall = ratio(hits[intent], support[intent])
        f1 = (None if precision is None or recall is None
              else 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
        per_intent.append({"intent": intent, "precision": precision, "recall": recall, "f1": f1,
                           "support": support[intent]})
    return scope.header() | {"labelled_runs": totals["labelled"], "accuracy": ratio(totals["correct"],
                                                                                     totals["labelled"]),
                             "matrix": matrix, "per_intent": per_intent}

