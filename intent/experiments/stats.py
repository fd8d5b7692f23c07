"""Statistics of live prompt A/B experiments, from the sufficient statistics the daily rollups keep.

Each run of an experiment belongs to one variant, one of them the control. Per variant and metric the rollups
keep counts (runs, successes, runs above a threshold) or a count, a sum and a sum of squares; summed over the
days, they are all that these functions need (no raw runs):

* a rate (success, fallback...): the share with its Wilson interval, which keeps its coverage near 0 and 1 and
  with few runs, where the Wald interval collapses to a point. A variant against the control: the difference
  of the shares with its unpooled Wald interval, and the two-sided p-value of the *pooled* two-proportion
  z-test (under the null hypothesis both arms have one rate, so the pooled variance is the statistic's own).
* a mean (latency, tokens, cost): the mean with Student's t interval; against the control Welch's t-test and
  the Welch-Satterthwaite interval of the difference, which do not assume equal variances (a prompt that
  changes the length of the answers changes the spread of their latency too). The variance comes from the
  sums: sumsq - total**2 / n loses digits by cancellation, so a result within rounding of zero is zero.
* a p95 (tail latency): a quantile test. Let q be the control's p95; `above` counts the variant's runs slower
  than q, `control_above` the control's own (about 5 % by construction). If both variants have one latency
  distribution, both shares estimate the same 5 %; a heavier tail puts more of the variant's runs above q.
  The shares are compared with the two-proportion z-test (Mood's median test, at the 95th percentile). q is
  estimated from the control's runs, so the control's share hardly varies, but the sampling error of q moves
  the variant's share by the variance the test ascribes to the control arm, p (1 - p) / n0 (Bahadur's
  representation of a sample quantile): the test keeps its level, which the tests' A/A simulation checks.

Peeking. A p-value recomputed every day as runs come in crosses alpha by chance far more often than alpha:
with ten looks at an A/A experiment about one in five is called (the tests show it). So we use a **fixed
horizon**: the experiment sets `min_runs_per_variant` in advance (`runs_needed` gives the runs per variant
that detect an absolute difference `effect` with the given power) and the test is made once, when every
variant has reached it. Before that the p-values are shown, marked provisional, and `decision` answers
"collecting". With several variants against one control, `decision` adjusts the p-values by **Holm's**
step-down method: it bounds the family-wise error rate by alpha like Bonferroni and rejects at least as often.
`Difference.significant` is the unadjusted p < alpha of that one comparison.

scipy and statsmodels are imported where used: statsmodels takes ~0.3 s to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

# Sums of squared deviations within this fraction of the sum of squares are rounding noise: zero variance.
CANCELLATION = 1e-12


def _finite(value: Any) -> float | None:
    """A Python float, or None for None, nan and infinities (JSON has none of them)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class _AsDict:
    def as_dict(self) -> dict[str, Any]:
        """The fields, JSON-safe: floats, None for what is undefined or not finite, booleans kept."""
        return {
            field.name: value if isinstance(value := getattr(self, field.name), bool) else _finite(value)
            for field in fields(self)
        }


@dataclass(frozen=True)
class Estimate(_AsDict):
    """One variant's metric: its value and (1 - alpha) interval, None where undefined (no runs, one run)."""

    value: float | None
    low: float | None
    high: float | None
    sd: float | None = None  # means only: the sample standard deviation (ddof=1)


@dataclass(frozen=True)
class Difference(_AsDict):
    """A variant against the control: diff = variant - control with its (1 - alpha) interval, the two-sided
    p-value, the relative lift diff / |control| (None when the control's value is 0) and p < alpha."""

    diff: float | None
    low: float | None
    high: float | None
    p_value: float | None
    relative: float | None
    significant: bool


NO_DIFFERENCE = Difference(diff=None, low=None, high=None, p_value=None, relative=None, significant=False)


def _difference(diff: float, low: Any, high: Any, p_value: Any, control: float, alpha: float) -> Difference:
    diff, p_value = _finite(diff), _finite(p_value)
    relative = diff / abs(control) if diff is not None and control else None
    return Difference(
        diff=diff, low=_finite(low), high=_finite(high), p_value=p_value, relative=_finite(relative),
        significant=p_value is not None and p_value < alpha,
    )


def _mean_sd(n: int, total: float, sumsq: float) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None below 2 runs) from n, sum and sum of squares."""
    mean = total / n
    if n < 2:
        return mean, None
    squares = sumsq - total * mean  # the sum of squared deviations, sum((x - mean)**2)
    if squares <= CANCELLATION * abs(sumsq):  # negative or rounding noise
        squares = 0.0
    return mean, math.sqrt(squares / (n - 1))


def proportion_estimate(*, successes: int, n: int, alpha: float = 0.05) -> Estimate:
    """The share successes / n and its Wilson score interval."""
    if n <= 0:
        return Estimate(value=None, low=None, high=None)
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    low, high = (0.0 if successes <= 0 else float(low)), (1.0 if successes >= n else float(high))  # exact ends
    return Estimate(value=successes / n, low=low, high=high)


def mean_estimate(*, n: int, total: float, sumsq: float, alpha: float = 0.05) -> Estimate:
    """The mean, the sample sd and Student's t interval of the mean (no interval below 2 runs)."""
    if n <= 0:
        return Estimate(value=None, low=None, high=None)
    mean, sd = _mean_sd(n, total, sumsq)
    if sd is None:
        return Estimate(value=_finite(mean), low=None, high=None)
    from scipy.stats import t

    half = float(t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(value=_finite(mean), low=_finite(mean - half), high=_finite(mean + half), sd=_finite(sd))


def proportion_difference(
    *, successes: int, n: int, control_successes: int, control_n: int, alpha: float = 0.05
) -> Difference:
    """Variant share - control share: Wald (unpooled) interval, pooled two-proportion z-test p-value."""
    if n <= 0 or control_n <= 0:
        return NO_DIFFERENCE
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    rate, control_rate = successes / n, control_successes / control_n
    if successes + control_successes in (0, n + control_n):
        p_value = 1.0  # all 0 or all 1 in both arms: no variance, and no evidence of any difference
    else:
        p_value = proportions_ztest([successes, control_successes], [n, control_n])[1]
    low, high = confint_proportions_2indep(successes, n, control_successes, control_n, method="wald", alpha=alpha)
    return _difference(rate - control_rate, low, high, p_value, control_rate, alpha)


def mean_difference(
    *, n: int, total: float, sumsq: float, control_n: int, control_total: float, control_sumsq: float,
    alpha: float = 0.05,
) -> Difference:
    """Variant mean - control mean: Welch's t-test and the Welch-Satterthwaite interval (2+ runs each)."""
    if n <= 0 or control_n <= 0:
        return NO_DIFFERENCE
    mean, sd = _mean_sd(n, total, sumsq)
    control_mean, control_sd = _mean_sd(control_n, control_total, control_sumsq)
    diff = mean - control_mean
    if sd is None or control_sd is None:
        return _difference(diff, None, None, None, control_mean, alpha)
    var, control_var = sd**2 / n, control_sd**2 / control_n
    se = math.sqrt(var + control_var)
    if se == 0:  # no spread in either arm: the means differ or they do not
        p_value = 1.0 if math.isclose(mean, control_mean, rel_tol=1e-9) else 0.0
        return _difference(diff, diff, diff, p_value, control_mean, alpha)
    from scipy.stats import t, ttest_ind_from_stats

    p_value = ttest_ind_from_stats(mean, sd, n, control_mean, control_sd, control_n, equal_var=False).pvalue
    df = (var + control_var) ** 2 / (var**2 / (n - 1) + control_var**2 / (control_n - 1))
    half = float(t.ppf(1 - alpha / 2, df)) * se
    return _difference(diff, diff - half, diff + half, p_value, control_mean, alpha)


def quantile_shift(*, above: int, n: int, control_above: int, control_n: int, alpha: float = 0.05) -> Difference:
    """A p95 metric: the share of the variant's runs above the control's p95 against the control's own share
    (about 5 %), by the two-proportion z-test: a quantile test (see the module docstring). diff > 0: the
    variant's tail is heavier."""
    return proportion_difference(
        successes=above, n=n, control_successes=control_above, control_n=control_n, alpha=alpha
    )


def runs_needed(
    *, kind: Literal["proportion", "mean"], baseline: float, effect: float, sd: float | None = None,
    alpha: float = 0.05, power: float = 0.8,
) -> int | None:
    """Runs per variant for a two-sided test at `alpha` to detect an absolute difference `effect` from
    `baseline` with probability `power`: normal approximation, with Cohen's h for a proportion and effect / sd
    for a mean. None when not computable (no effect, no sd, a rate outside [0, 1])."""
    if kind == "proportion":
        target = baseline + effect
        if not (0 <= baseline <= 1 and 0 <= target <= 1):
            return None
        from statsmodels.stats.proportion import proportion_effectsize

        size = proportion_effectsize(target, baseline)
    elif kind == "mean":
        if sd is None or not sd > 0:
            return None
        size = effect / sd
    else:
        raise ValueError(f"kind must be 'proportion' or 'mean', not {kind!r}")
    size = _finite(abs(size))
    if not size or not (0 < alpha < 1 and 0 < power < 1):
        return None
    from scipy.stats import norm
    from statsmodels.stats.power import NormalIndPower

    # solve_power fails below 2 runs (it returns its start value): there the closed form, ignoring the far tail
    closed_form = 2 * ((norm.isf(alpha / 2) + norm.ppf(power)) / size) ** 2
    if closed_form < 3:
        return max(2, math.ceil(closed_form))
    runs = _finite(NormalIndPower().solve_power(effect_size=size, alpha=alpha, power=power, ratio=1.0))
    return None if runs is None else math.ceil(runs)


def _holm(p_values: dict[str, float], *, tests: int) -> dict[str, float]:
    """Holm's step-down adjusted p-values; `tests` counts the undefined comparisons too (as p = 1: they still
    take their share of alpha). By hand: statsmodels' multipletests runs gc.collect() at every call."""
    adjusted, running = {}, 0.0
    for rank, name in enumerate(sorted(p_values, key=p_values.get)):
        running = max(running, min(1.0, (tests - rank) * p_values[name]))
        adjusted[name] = running
    return adjusted


def decision(
    *, differences: dict[str, Difference], reached_horizon: bool, alpha: float, higher_is_better: bool
) -> dict[str, Any]:
    """The experiment's verdict on one metric, from each variant's Difference against the control.

    Before the horizon: "collecting" (the p-values are provisional). At it, with Holm-adjusted p-values:
    "winner" (the variant with the largest significant improvement), else "control_better" (a variant is
    significantly worse, none better: `variant` names the most significant of them), else "no_difference".
    The answer also holds `provisional` and `adjusted_p_values` (None where a p-value is undefined).
    """
    names = [name for name, d in differences.items() if d.p_value is not None]
    adjusted: dict[str, float | None] = dict.fromkeys(differences)
    adjusted.update(_holm({name: differences[name].p_value for name in names}, tests=len(differences)))

    def verdict(state: str, variant: str | None, reason: str) -> dict[str, Any]:
        return {"state": state, "variant": variant, "reason": reason, "provisional": not reached_horizon,
                "adjusted_p_values": adjusted}

    if not reached_horizon:
        return verdict("collecting", None, "The horizon is not reached: the p-values are provisional "
                       "(testing before it would inflate the false positives).")
    sign = 1 if higher_is_better else -1
    found = {name: differences[name] for name in names if adjusted[name] < alpha and differences[name].diff}
    better = [name for name, d in found.items() if d.diff * sign > 0]
    worse = [name for name, d in found.items() if d.diff * sign < 0]
    correction = f"p-values Holm-adjusted for {len(differences)} variant(s), alpha={alpha:g}"
    if better:
        name = max(better, key=lambda name: found[name].diff * sign)
        return verdict("winner", name, f"{name} beats the control: difference {found[name].diff:+.4g} "
                       f"(p={adjusted[name]:.3g}; {correction}).")
    if worse:
        name = min(worse, key=lambda name: adjusted[name])
        return verdict("control_better", name, f"The control beats {name}: difference {found[name].diff:+.4g} "
                       f"(p={adjusted[name]:.3g}; {correction}).")
    if not differences:
        return verdict("no_difference", None, "No variant to compare with the control.")
    return verdict("no_difference", None, f"No variant differs significantly from the control ({correction}).")
