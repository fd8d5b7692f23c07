"""An experiment's numbers: per arm the runs, the primary metric and the guardrails with their intervals; per
variant the difference from control with its interval and p-value; the runs still needed; the decision.

An A/B experiment is read from the daily rollups (`analytics`, dimension `variant`: counts, sums, sums of squares
and the latency sketch of each arm's runs per day), so its results cost a few dozen rows whatever its traffic. A
shadow experiment is read from its candidates' answers (`ShadowDetection`), each beside the live answer to the same
request: the control arm is the live answers to the requests the candidate also saw.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from analytics.mirror.sketch import LatencySketch, sketch_key
from analytics.models import COMPOUND_SEPARATOR, DailyRollup, SyncState
from intentsite.contract import OUT_OF_SCOPE, STATUS_ERROR

from ..models import DetectionFeedback, Experiment, ShadowDetection
from . import stats

Metric = Experiment.Metric
HIGHER_IS_BETTER = {Metric.ACCURACY: True, Metric.AVG_CONFIDENCE: True, Metric.OUT_OF_SCOPE_RATE: False,
                    Metric.LATENCY_P95_MS: False}
GUARDRAILS = {"error_rate_max": "error_rate", "fallback_rate_max": "fallback_rate",
              "latency_p95_ms_max": "latency_p95_ms"}


@dataclass
class ArmStats:
    """The sufficient statistics of one arm's runs."""

    runs: int = 0
    errors: int = 0
    fallbacks: int = 0
    out_of_scope: int = 0
    labelled: int = 0
    correct: int = 0
    confidence_count: int = 0
    confidence_sum: float = 0.0
    confidence_sumsq: float = 0.0
    agreements: int = 0  # shadow: answers equal to the live one
    sketch: LatencySketch = field(default_factory=LatencySketch)

    def p95(self) -> float | None:
        return self.sketch.quantile(0.95)

    def sample_size(self, metric: str) -> int:
        return self.labelled if metric == Metric.ACCURACY else self.runs


def _p95_estimate(arm: ArmStats, *, alpha: float) -> dict[str, Any]:
    """The p95 and its distribution-free interval: the order statistics whose ranks bound the 95th percentile's with
    probability 1 - alpha (binomial ranks), read from the sketch (each within 1 %)."""
    from scipy.stats import binom

    n = arm.sketch.count
    if n == 0:
        return stats.Estimate(None, None, None).as_dict()
    low_rank = int(binom.ppf(alpha / 2, n, 0.95))
    high_rank = int(binom.ppf(1 - alpha / 2, n, 0.95)) + 1
    at = (lambda rank: arm.sketch.quantile((rank - 0.5) / n))  # noqa: E731 - the value of that rank
    low = at(low_rank) if low_rank >= 1 else None
    high = at(high_rank) if high_rank <= n else None
    return stats.Estimate(arm.p95(), low, high).as_dict()


def _estimates(arm: ArmStats, *, alpha: float, shadow: bool) -> dict[str, Any]:
    estimates = {
        "accuracy": stats.proportion_estimate(successes=arm.correct, n=arm.labelled, alpha=alpha).as_dict(),
        "avg_confidence": stats.mean_estimate(n=arm.confidence_count, total=arm.confidence_sum,
                                              sumsq=arm.confidence_sumsq, alpha=alpha).as_dict(),
        "out_of_scope_rate": stats.proportion_estimate(successes=arm.out_of_scope, n=arm.runs, alpha=alpha).as_dict(),
        "latency_p95_ms": _p95_estimate(arm, alpha=alpha),
        "error_rate": stats.proportion_estimate(successes=arm.errors, n=arm.runs, alpha=alpha).as_dict(),
        "fallback_rate": stats.proportion_estimate(successes=arm.fallbacks, n=arm.runs, alpha=alpha).as_dict(),
    }
    if shadow:
        estimates["agreement"] = stats.proportion_estimate(successes=arm.agreements, n=arm.runs, alpha=alpha).as_dict()
    return estimates


def metric_difference(metric: str, arm: ArmStats, control: ArmStats, *, alpha: float) -> stats.Difference:
    """The arm against control on one metric, with the test that fits it."""
    if metric == "accuracy":
        return stats.proportion_difference(successes=arm.correct, n=arm.labelled, control_successes=control.correct,
                                           control_n=control.labelled, alpha=alpha)
    if metric in ("out_of_scope_rate", "error_rate", "fallback_rate"):
        name = {"out_of_scope_rate": "out_of_scope", "error_rate": "errors", "fallback_rate": "fallbacks"}[metric]
        return stats.proportion_difference(successes=getattr(arm, name), n=arm.runs,
                                           control_successes=getattr(control, name), control_n=control.runs,
                                           alpha=alpha)
    if metric == "avg_confidence":
        return stats.mean_difference(n=arm.confidence_count, total=arm.confidence_sum, sumsq=arm.confidence_sumsq,
                                     control_n=control.confidence_count, control_total=control.confidence_sum,
                                     control_sumsq=control.confidence_sumsq, alpha=alpha)
    if metric == "latency_p95_ms":
        threshold = control.p95()
        if threshold is None or arm.sketch.count == 0:
            return stats.quantile_shift(above=0, n=0, control_above=0, control_n=0, alpha=alpha)
        shift = stats.quantile_shift(above=arm.sketch.count_above(threshold), n=arm.sketch.count,
                                     control_above=control.sketch.count_above(threshold),
                                     control_n=control.sketch.count, alpha=alpha)
        p95 = arm.p95()  # the shown difference is in ms (no interval); the test is on the shares above
        return replace(shift, diff=p95 - threshold, low=None, high=None,
                       relative=(p95 - threshold) / threshold if threshold else None)
    raise ValueError(f"unknown metric {metric!r}")


def _runs_needed(experiment: Experiment, control: ArmStats) -> int | None:
    effect = experiment.minimum_effect
    metric = experiment.primary_metric
    if not effect:
        return None
    if metric == Metric.AVG_CONFIDENCE:
        n = control.confidence_count
        if n < 2:
            return None
        mean = control.confidence_sum / n
        sd = math.sqrt(max(0.0, (control.confidence_sumsq - n * mean * mean) / (n - 1)))
        return stats.runs_needed(kind="mean", baseline=mean, effect=effect, sd=sd, alpha=experiment.alpha)
    if metric == Metric.LATENCY_P95_MS:
        return None  # a quantile test's power depends on the whole tail's shape: no closed form worth showing
    baseline = (control.correct / control.labelled if metric == Metric.ACCURACY and control.labelled
                else control.out_of_scope / control.runs if metric == Metric.OUT_OF_SCOPE_RATE and control.runs
                else None)
    if baseline is None:
        return None
    return stats.runs_needed(kind="proportion", baseline=baseline, effect=effect, alpha=experiment.alpha)


def experiment_period(experiment: Experiment) -> tuple[date, date] | None:
    if experiment.started_at is None:
        return None
    end = experiment.ended_at or timezone.now()
    return experiment.started_at.astimezone(UTC).date(), end.astimezone(UTC).date()


def _ab_stats(experiment: Experiment) -> tuple[dict[str, ArmStats], list[dict[str, Any]]]:
    """Per arm the summed rollups of its runs, and per day and arm the runs and primary metric."""
    arms = {arm["name"]: ArmStats() for arm in experiment.arms()}
    period = experiment_period(experiment)
    experiment_id = (SyncState.objects.filter(experiment_name=settings.MLFLOW_EXPERIMENT_NAME)
                     .exclude(experiment_id="").values_list("experiment_id", flat=True).first())
    if period is None or experiment_id is None:
        return arms, []
    values = {f"{experiment.name}{COMPOUND_SEPARATOR}{name}": name for name in arms}
    rows = DailyRollup.objects.filter(experiment_id=experiment_id, dimension=DailyRollup.Dimension.VARIANT,
                                      value__in=list(values), day__gte=period[0], day__lte=period[1]).order_by("day")
    daily: dict[tuple[date, str], ArmStats] = defaultdict(ArmStats)
    for row in rows:
        name = values[row.value]
        for target in (arms[name], daily[(row.day, name)]):
            for attribute in ("runs", "errors", "fallbacks", "out_of_scope", "labelled", "correct",
                              "confidence_count", "confidence_sum", "confidence_sumsq"):
                setattr(target, attribute, getattr(target, attribute) + getattr(row, attribute))
            target.sketch.add(LatencySketch.from_stored(row.latency_sketch))
    return arms, _daily(experiment, daily)


def _daily(experiment: Experiment, daily: dict[tuple[date, str], ArmStats]) -> list[dict[str, Any]]:
    metric = experiment.primary_metric
    series = []
    for (day, name), arm in sorted(daily.items()):
        value = {
            Metric.ACCURACY: arm.correct / arm.labelled if arm.labelled else None,
            Metric.AVG_CONFIDENCE: arm.confidence_sum / arm.confidence_count if arm.confidence_count else None,
            Metric.OUT_OF_SCOPE_RATE: arm.out_of_scope / arm.runs if arm.runs else None,
            Metric.LATENCY_P95_MS: arm.p95(),
        }[metric]
        series.append({"day": day.isoformat(), "arm": name, "runs": arm.runs, "value": value})
    return series


def _shadow_stats(experiment: Experiment) -> tuple[dict[str, ArmStats], list[dict[str, Any]]]:
    """Per candidate its answers; control: the live answers to the same requests (so each candidate is compared on
    its own sample, and `control` sums the live answers to every sampled request once)."""
    arms = {arm["name"]: ArmStats() for arm in experiment.arms()}
    rows = list(ShadowDetection.objects.filter(experiment=experiment).values_list(
        "variant", "request_id", "created_at", "live_intent", "live_confidence", "live_status",
        "live_response_time_ms", "intent", "confidence", "status", "fallback_used", "response_time_ms"))
    labels = dict(DetectionFeedback.objects.filter(request_id__in={row[1] for row in rows})
                  .values_list("request_id", "expected_intent")) if rows else {}
    seen: set = set()
    daily: dict[tuple[date, str], ArmStats] = defaultdict(ArmStats)
    keys: dict[str, list] = defaultdict(list)
    for variant, request_id, created_at, *live, intent, confidence, status, fallback, elapsed in rows:
        if variant not in arms:
            continue
        day = created_at.astimezone(UTC).date()
        expected = labels.get(request_id)
        answers = [(variant, intent, confidence, status, fallback, elapsed)]
        if request_id not in seen:
            seen.add(request_id)
            answers.append(("control", live[0], live[1], live[2], False, live[3]))
        for name, answer, score, state, fell_back, ms in answers:
            for arm in (arms[name], daily[(day, name)]):
                arm.runs += 1
                arm.errors += state == STATUS_ERROR
                arm.fallbacks += bool(fell_back)
                arm.out_of_scope += answer == OUT_OF_SCOPE
                arm.confidence_count += 1
                arm.confidence_sum += score
                arm.confidence_sumsq += score * score
                arm.agreements += name != "control" and answer == live[0]
                if expected is not None:
                    arm.labelled += 1
                    arm.correct += answer == expected
            keys[name].append(sketch_key(ms))
            keys[f"{day}\x1f{name}"].append(sketch_key(ms))
    for name, arm in arms.items():
        arm.sketch = LatencySketch.from_keys(keys[name])
    for (day, name), arm in daily.items():
        arm.sketch = LatencySketch.from_keys(keys[f"{day}\x1f{name}"])
    return arms, _daily(experiment, daily)


def experiment_results_get(*, experiment: Experiment) -> dict[str, Any]:
    """Everything `GET /api/intent/experiments/{id}/results` answers (see the module's docstring)."""
    shadow = experiment.mode == Experiment.Mode.SHADOW
    arms, daily = (_shadow_stats if shadow else _ab_stats)(experiment)
    alpha = experiment.alpha
    metric = experiment.primary_metric
    control = arms["control"]
    guardrails = {name: limit for name, limit in (experiment.guardrails or {}).items() if limit is not None}
    compared = [metric, *(GUARDRAILS[name] for name in guardrails if GUARDRAILS[name] != metric)]
    reached = all(arm.sample_size(metric) >= experiment.min_runs_per_variant for arm in arms.values())
    answer_arms, differences = [], {}
    for arm_spec in experiment.arms():
        name = arm_spec["name"]
        arm = arms[name]
        entry = {"name": name, "prompt_version": arm_spec["prompt_version"], "weight": arm_spec["weight"],
                 "runs": arm.runs, "labelled": arm.labelled,
                 "metrics": _estimates(arm, alpha=alpha, shadow=shadow and name != "control")}
        if name != "control":
            compared_here = {item: metric_difference(item, arm, control, alpha=alpha) for item in compared}
            differences[name] = compared_here[metric]
            entry["difference"] = {item: difference.as_dict() | {"provisional": not reached}
                                   for item, difference in compared_here.items()}
        answer_arms.append(entry)
    return {
        "experiment": {"id": experiment.pk, "name": experiment.name, "mode": experiment.mode,
                       "status": experiment.status, "primary_metric": metric, "alpha": alpha,
                       "started_at": experiment.started_at, "ended_at": experiment.ended_at},
        "horizon": {"policy": "fixed", "min_runs_per_variant": experiment.min_runs_per_variant, "reached": reached,
                    "counts": "labelled runs" if metric == Metric.ACCURACY else "runs"},
        "arms": answer_arms,
        "runs_needed_per_variant": _runs_needed(experiment, control),
        "guardrails": guardrails_check(experiment, arms),
        "decision": stats.decision(differences=differences, reached_horizon=reached, alpha=alpha,
                                   higher_is_better=HIGHER_IS_BETTER[metric]),
        "daily": daily,
        "computed_at": datetime.now(UTC),
    }


def guardrails_check(experiment: Experiment, arms: dict[str, ArmStats]) -> list[dict[str, Any]]:
    """Each variant against each guardrail. Breached: the limit is below the variant's whole interval at the
    guardrails' confidence (EXPERIMENTS_GUARDRAIL_CONFIDENCE, 99 %: beat looks every minute, so a stricter level than
    the decision's keeps false rollbacks rare; a rollback only costs a test), with at least
    EXPERIMENTS_GUARDRAIL_MIN_RUNS runs; or the value is above the limit once the variant has min_runs_per_variant."""
    alpha = 2 * (1 - settings.EXPERIMENTS_GUARDRAIL_CONFIDENCE)  # a two-sided interval whose low end is one-sided
    checks = []
    for name, limit in sorted((experiment.guardrails or {}).items()):
        if limit is None:
            continue
        metric = GUARDRAILS[name]
        for variant, arm in arms.items():
            if variant == "control":
                continue
            if metric == "latency_p95_ms":
                estimate = _p95_estimate(arm, alpha=alpha)
            else:
                successes = arm.errors if metric == "error_rate" else arm.fallbacks
                estimate = stats.proportion_estimate(successes=successes, n=arm.runs, alpha=alpha).as_dict()
            value, low = estimate["value"], estimate["low"]
            significant = (arm.runs >= settings.EXPERIMENTS_GUARDRAIL_MIN_RUNS and low is not None
                           and low > limit)
            at_horizon = arm.runs >= experiment.min_runs_per_variant and value is not None and value > limit
            checks.append({"variant": variant, "guardrail": name, "limit": limit, "value": value, "low": low,
                           "high": estimate["high"], "runs": arm.runs, "breached": significant or at_horizon,
                           "why": ("significantly above its limit" if significant else
                                   "above its limit at the horizon" if at_horizon else "")})
    return checks
