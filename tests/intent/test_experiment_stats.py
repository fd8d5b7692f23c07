"""intent/experiments/stats.py: each function against a reference computed from raw samples, then by simulation:
tested once at the fixed horizon an A/A experiment is called at rate alpha (peeking every 100 runs calls far
more), Holm keeps a several-variant experiment at alpha, and runs_needed keeps its power promise."""

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from intent.experiments.stats import (
    Difference,
    Estimate,
    decision,
    mean_difference,
    mean_estimate,
    proportion_difference,
    proportion_estimate,
    quantile_shift,
    runs_needed,
)

SIMULATIONS = 2000


def approx(value):
    return pytest.approx(value, rel=1e-9, abs=1e-12)


def sums(x, prefix=""):
    """What a daily rollup keeps of a metric's raw values."""
    return {f"{prefix}n": len(x), f"{prefix}total": float(np.sum(x)), f"{prefix}sumsq": float(np.sum(np.square(x)))}


def wilson(k, n, alpha):
    z = sps.norm.isf(alpha / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def pooled_z_p_value(k1, n1, k0, n0):
    """Two-sided p-value of the pooled two-proportion z-test, vectorised (1 where both arms are all 0 or all 1)."""
    k1, n1, k0, n0 = (np.asarray(a, dtype=float) for a in (k1, n1, k0, n0))
    pooled = (k1 + k0) / (n1 + n0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (k1 / n1 - k0 / n0) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    return np.where(np.isfinite(z), 2 * sps.norm.sf(np.abs(z)), 1.0)


def within_binomial(hits, trials, rate):
    """The observed rate agrees with `rate` (two-sided exact binomial test at 0.001)."""
    return sps.binomtest(int(hits), trials, rate).pvalue > 0.001


# --- Against references from raw data ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "rate", "n", "alpha"), [(1, 0.3, 500, 0.05), (2, 0.02, 80, 0.1), (3, 0.97, 1000, 0.01)]
)
def test_proportion_estimate_is_the_wilson_interval(seed, rate, n, alpha):
    k = int((np.random.default_rng(seed).random(n) < rate).sum())
    estimate = proportion_estimate(successes=k, n=n, alpha=alpha)
    low, high = wilson(k, n, alpha)
    assert (estimate.value, estimate.low, estimate.high) == (approx(k / n), approx(low), approx(high))


@pytest.mark.parametrize(("seed", "n", "alpha"), [(4, 2, 0.05), (5, 37, 0.1), (6, 5000, 0.05)])
def test_mean_estimate_matches_the_raw_sample(seed, n, alpha):
    x = np.random.default_rng(seed).lognormal(5.5, 0.6, n)  # latencies, ms
    estimate = mean_estimate(**sums(x), alpha=alpha)
    low, high = sps.t.interval(1 - alpha, n - 1, loc=x.mean(), scale=sps.sem(x))
    assert (estimate.value, estimate.sd) == (approx(x.mean()), approx(x.std(ddof=1)))
    assert (estimate.low, estimate.high) == (approx(low), approx(high))


@pytest.mark.parametrize(
    ("seed", "rate", "control_rate", "n", "control_n", "alpha"),
    [(7, 0.12, 0.10, 3000, 2800, 0.05), (8, 0.5, 0.5, 200, 250, 0.05), (9, 0.03, 0.06, 900, 1200, 0.01)],
)
def test_proportion_difference_matches_the_raw_samples(seed, rate, control_rate, n, control_n, alpha):
    rng = np.random.default_rng(seed)
    k1, k0 = int((rng.random(n) < rate).sum()), int((rng.random(control_n) < control_rate).sum())
    p1, p0 = k1 / n, k0 / control_n
    half = sps.norm.isf(alpha / 2) * math.sqrt(p1 * (1 - p1) / n + p0 * (1 - p0) / control_n)
    p_value = float(pooled_z_p_value(k1, n, k0, control_n))

    got = proportion_difference(successes=k1, n=n, control_successes=k0, control_n=control_n, alpha=alpha)
    assert (got.diff, got.low, got.high) == (approx(p1 - p0), approx(p1 - p0 - half), approx(p1 - p0 + half))
    assert (got.p_value, got.relative) == (approx(p_value), approx((p1 - p0) / p0))
    assert got.significant is (p_value < alpha)


@pytest.mark.parametrize(
    ("seed", "n", "control_n", "shift", "alpha"),
    [(10, 800, 1000, 15.0, 0.05), (11, 5, 9, 0.0, 0.05), (12, 60, 40, 40.0, 0.1)],
)
def test_mean_difference_is_welch_on_the_raw_samples(seed, n, control_n, shift, alpha):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(300 + shift, 120, n), rng.normal(300, 70, control_n)  # unequal spreads: Welch's case
    reference = sps.ttest_ind(a, b, equal_var=False)
    low, high = reference.confidence_interval(1 - alpha)

    got = mean_difference(**sums(a), **sums(b, "control_"), alpha=alpha)
    diff = a.mean() - b.mean()
    assert (got.diff, got.low, got.high) == (approx(diff), approx(low), approx(high))
    assert (got.p_value, got.relative) == (approx(reference.pvalue), approx(diff / b.mean()))
    assert got.significant is bool(reference.pvalue < alpha)


def test_quantile_shift_counts_runs_above_the_controls_p95():
    rng = np.random.default_rng(13)
    control, variant = rng.lognormal(5.5, 0.5, 4000), rng.lognormal(5.5, 0.65, 3000)  # same median, heavier tail
    q = np.quantile(control, 0.95)
    above, control_above = int((variant > q).sum()), int((control > q).sum())
    assert control_above == 200  # 5 % of the control, by construction

    got = quantile_shift(above=above, n=3000, control_above=control_above, control_n=4000)
    assert got.diff == approx(above / 3000 - 0.05)
    assert got.p_value == approx(float(pooled_z_p_value(above, 3000, 200, 4000)))
    assert got.diff > 0 and got.significant


def normal_power(size, n, alpha):
    """Power of the two-sided two-sample z-test, both tails, for a standardised effect `size`, n per arm."""
    z, shift = sps.norm.isf(alpha / 2), size * math.sqrt(n / 2)
    return sps.norm.cdf(shift - z) + sps.norm.cdf(-shift - z)


@pytest.mark.parametrize(
    ("kind", "baseline", "effect", "sd", "alpha", "power"),
    [
        ("proportion", 0.1, 0.02, None, 0.05, 0.8),
        ("proportion", 0.9, -0.05, None, 0.01, 0.9),
        ("mean", 300, 15, 80, 0.05, 0.8),
        ("mean", 0, 2.5, 1, 0.05, 0.8),  # 3 runs: below where solve_power works
    ],
)
def test_runs_needed_is_the_smallest_n_with_the_power(kind, baseline, effect, sd, alpha, power):
    if kind == "proportion":
        size = abs(2 * math.asin(math.sqrt(baseline + effect)) - 2 * math.asin(math.sqrt(baseline)))  # Cohen's h
    else:
        size = effect / sd
    n = runs_needed(kind=kind, baseline=baseline, effect=effect, sd=sd, alpha=alpha, power=power)
    assert normal_power(size, n, alpha) >= power > normal_power(size, n - 1, alpha)
    assert n == math.ceil(2 * ((sps.norm.isf(alpha / 2) + sps.norm.ppf(power)) / size) ** 2)  # the one-tail formula


# --- Simulations: the fixed horizon --------------------------------------------------------------------------


def test_aa_proportions_tested_once_at_the_horizon_are_called_at_rate_alpha():
    horizon, rate = 1000, 0.1
    k = np.random.default_rng(20).binomial(horizon, rate, size=(SIMULATIONS, 2))
    p_values = np.array([
        proportion_difference(successes=int(a), n=horizon, control_successes=int(b), control_n=horizon).p_value
        for a, b in k
    ])
    np.testing.assert_allclose(p_values, pooled_z_p_value(k[:, 0], horizon, k[:, 1], horizon), rtol=1e-9)
    assert within_binomial((p_values < 0.05).sum(), SIMULATIONS, 0.05), (p_values < 0.05).mean()


def test_aa_means_tested_once_at_the_horizon_are_called_at_rate_alpha():
    horizon, rng = 1000, np.random.default_rng(21)
    a, b = rng.normal(300, 80, (SIMULATIONS, horizon)), rng.normal(300, 120, (SIMULATIONS, horizon))
    a_total, a_sumsq, b_total, b_sumsq = a.sum(1), np.square(a).sum(1), b.sum(1), np.square(b).sum(1)
    p_values = np.array([
        mean_difference(n=horizon, total=a_total[i], sumsq=a_sumsq[i],
                        control_n=horizon, control_total=b_total[i], control_sumsq=b_sumsq[i]).p_value
        for i in range(SIMULATIONS)
    ])
    assert within_binomial((p_values < 0.05).sum(), SIMULATIONS, 0.05), (p_values < 0.05).mean()


def test_aa_quantile_shift_keeps_its_level_though_the_threshold_is_estimated():
    horizon, rng = 1000, np.random.default_rng(22)
    control, variant = rng.lognormal(5.5, 0.5, (SIMULATIONS, horizon)), rng.lognormal(5.5, 0.5, (SIMULATIONS, horizon))
    q = np.quantile(control, 0.95, axis=1, keepdims=True)
    above, control_above = (variant > q).sum(1), (control > q).sum(1)
    p_values = np.array([
        quantile_shift(above=int(a), n=horizon, control_above=int(c), control_n=horizon).p_value
        for a, c in zip(above, control_above, strict=True)
    ])
    assert within_binomial((p_values < 0.05).sum(), SIMULATIONS, 0.05), (p_values < 0.05).mean()


def test_peeking_every_100_runs_inflates_the_false_positives():
    """Why the horizon is fixed: the same A/A experiments, looked at every 100 runs and stopped at the first
    p < 0.05, are called about 4 times as often as alpha, though each single look is at rate alpha."""
    step, looks, rate = 100, 10, 0.1
    k = np.random.default_rng(23).binomial(step, rate, size=(SIMULATIONS, looks, 2)).cumsum(axis=1)
    n = step * np.arange(1, looks + 1)[None, :]
    p_values = pooled_z_p_value(k[..., 0], n, k[..., 1], n)
    for i, j in [(0, 0), (1, 4), (2, 9), (3, 2)]:  # the vectorised reference is the module's test
        got = proportion_difference(successes=int(k[i, j, 0]), n=int(n[0, j]),
                                    control_successes=int(k[i, j, 1]), control_n=int(n[0, j]))
        assert got.p_value == approx(p_values[i, j])
    assert within_binomial((p_values[:, -1] < 0.05).sum(), SIMULATIONS, 0.05)  # the horizon alone
    peeking = (p_values < 0.05).any(axis=1).mean()
    assert peeking > 0.1, peeking


def test_holm_keeps_several_variants_at_alpha_where_uncorrected_tests_do_not():
    horizon, rate = 1000, 0.1
    k = np.random.default_rng(24).binomial(horizon, rate, size=(SIMULATIONS, 3))  # control, b, c: all the same
    called = uncorrected = 0
    for control, *variants in k:
        differences = {
            name: proportion_difference(successes=int(v), n=horizon, control_successes=int(control), control_n=horizon)
            for name, v in zip("bc", variants, strict=True)
        }
        verdict = decision(differences=differences, reached_horizon=True, alpha=0.05, higher_is_better=True)
        called += verdict["state"] != "no_difference"
        uncorrected += any(d.significant for d in differences.values())
    assert sps.binomtest(called, SIMULATIONS, 0.05, alternative="greater").pvalue > 0.001, called / SIMULATIONS
    assert uncorrected / SIMULATIONS > 0.07 and uncorrected > called  # two uncorrected looks: ~ 9 %


def test_a_real_effect_is_detected_at_the_promised_power():
    rng = np.random.default_rng(25)
    n = runs_needed(kind="proportion", baseline=0.1, effect=0.03)
    k1, k0 = rng.binomial(n, 0.13, SIMULATIONS), rng.binomial(n, 0.1, SIMULATIONS)
    verdicts = [
        decision(differences={"b": proportion_difference(successes=int(a), n=n, control_successes=int(b), control_n=n)},
                 reached_horizon=True, alpha=0.05, higher_is_better=True)
        for a, b in zip(k1, k0, strict=True)
    ]
    power = np.mean([v["state"] == "winner" for v in verdicts])
    assert abs(power - 0.8) <= 0.05, (n, power)

    n = runs_needed(kind="mean", baseline=300, effect=-15, sd=80)  # a faster prompt
    a, b = rng.normal(285, 80, (SIMULATIONS, n)), rng.normal(300, 80, (SIMULATIONS, n))
    a_total, a_sumsq, b_total, b_sumsq = a.sum(1), np.square(a).sum(1), b.sum(1), np.square(b).sum(1)
    detected = [
        mean_difference(n=n, total=a_total[i], sumsq=a_sumsq[i], control_n=n, control_total=b_total[i],
                        control_sumsq=b_sumsq[i])
        for i in range(SIMULATIONS)
    ]
    power = np.mean([d.significant and d.diff < 0 for d in detected])
    assert abs(power - 0.8) <= 0.05, (n, power)


# --- Edge cases ------------------------------------------------------------------------------------------------


def json_safe(result):
    as_dict = result.as_dict()
    json.dumps(as_dict, allow_nan=False)
    assert all(v is None or type(v) in (float, bool) for v in as_dict.values()), as_dict
    return as_dict


def test_no_runs_and_one_run():
    assert proportion_estimate(successes=0, n=0) == Estimate(value=None, low=None, high=None)
    assert mean_estimate(n=0, total=0.0, sumsq=0.0) == Estimate(value=None, low=None, high=None)
    assert mean_estimate(n=1, total=250.0, sumsq=62500.0) == Estimate(value=250.0, low=None, high=None, sd=None)
    for got in [
        proportion_difference(successes=0, n=0, control_successes=0, control_n=0),
        proportion_difference(successes=3, n=10, control_successes=0, control_n=0),
        mean_difference(n=0, total=0.0, sumsq=0.0, control_n=5, control_total=5.0, control_sumsq=5.0),
        quantile_shift(above=0, n=0, control_above=0, control_n=0),
    ]:
        assert json_safe(got) == dict.fromkeys(["diff", "low", "high", "p_value", "relative"]) | {"significant": False}
    one_run = mean_difference(
        n=1, total=250.0, sumsq=62500.0, control_n=5, control_total=1000.0, control_sumsq=2e5 + 10
    )
    assert (one_run.diff, one_run.p_value, one_run.low, one_run.significant) == (50.0, None, None, False)


@pytest.mark.parametrize("value", [0.1, 1 / 3, 7.7, 1e6 + 0.1, 0.0])
@pytest.mark.parametrize("n", [3, 1000])
def test_zero_variance_is_zero_whatever_the_rounding(value, n):
    x = np.full(n, value)
    estimate = mean_estimate(**sums(x))
    assert estimate.sd == 0.0 and estimate.low == estimate.high == estimate.value == approx(value)
    same = mean_difference(**sums(x), **sums(x, "control_"))
    assert (same.diff, same.low, same.high, same.p_value, same.significant) == (0.0, 0.0, 0.0, 1.0, False)
    shifted = mean_difference(**sums(x + 1.0), **sums(x, "control_"))
    assert (shifted.diff, shifted.p_value, shifted.significant) == (approx(1.0), 0.0, True)
    json_safe(estimate), json_safe(same), json_safe(shifted)


def test_rates_of_zero_and_one():
    none_yet = proportion_estimate(successes=0, n=20)
    assert json_safe(none_yet) == {"value": 0.0, "low": 0.0, "high": approx(wilson(0, 20, 0.05)[1]), "sd": None}
    assert proportion_estimate(successes=20, n=20).high == 1.0
    none = proportion_difference(successes=0, n=500, control_successes=0, control_n=400)
    assert json_safe(none) == {
        "diff": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0, "relative": None, "significant": False
    }
    every = proportion_difference(successes=500, n=500, control_successes=400, control_n=400)
    assert (every.diff, every.p_value, every.relative, every.significant) == (0.0, 1.0, 0.0, False)
    opposite = proportion_difference(successes=50, n=50, control_successes=0, control_n=50)
    assert opposite.diff == 1.0 and opposite.p_value < 1e-20 and opposite.relative is None and opposite.significant
    json_safe(opposite)


def test_as_dict_turns_nan_and_infinities_into_none():
    odd = Difference(
        diff=math.nan, low=-math.inf, high=math.inf, p_value=np.float64("nan"), relative=np.float64(2.5),
        significant=False,
    )
    assert json_safe(odd) == {
        "diff": None, "low": None, "high": None, "p_value": None, "relative": 2.5, "significant": False
    }
    odd = Estimate(value=np.float64(0.25), low=math.nan, high=None)
    assert json_safe(odd) == {"value": 0.25, "low": None, "high": None, "sd": None}


def test_runs_needed_when_not_computable():
    assert runs_needed(kind="proportion", baseline=0.1, effect=0.0) is None
    assert runs_needed(kind="proportion", baseline=0.95, effect=0.1) is None  # 105 %
    assert runs_needed(kind="mean", baseline=300, effect=10) is None  # no sd
    assert runs_needed(kind="mean", baseline=300, effect=10, sd=0.0) is None
    assert runs_needed(kind="mean", baseline=300, effect=0.0, sd=50) is None
    assert runs_needed(kind="proportion", baseline=0.1, effect=0.02, power=1.0) is None
    assert runs_needed(kind="mean", baseline=0, effect=1000, sd=1) == 2  # never below 2 runs
    with pytest.raises(ValueError, match="kind"):
        runs_needed(kind="median", baseline=1, effect=1, sd=1)


# --- decision ---------------------------------------------------------------------------------------------------


def d(diff, p_value):
    return Difference(diff=diff, low=None, high=None, p_value=p_value, relative=None, significant=p_value < 0.05)


def decide(differences, reached_horizon=True, higher_is_better=True):
    verdict = decision(
        differences=differences, reached_horizon=reached_horizon, alpha=0.05, higher_is_better=higher_is_better
    )
    json.dumps(verdict, allow_nan=False)
    return verdict


def test_decision_waits_for_the_horizon():
    verdict = decide({"b": d(0.1, 1e-9)}, reached_horizon=False)
    assert (verdict["state"], verdict["variant"], verdict["provisional"]) == ("collecting", None, True)
    assert "provisional" in verdict["reason"]
    assert decide({"b": d(0.1, 1e-9)})["provisional"] is False


def test_decision_states_and_direction():
    assert decide({"b": d(0.02, 0.001)}) | {"reason": ""} == {
        "state": "winner", "variant": "b", "reason": "", "provisional": False, "adjusted_p_values": {"b": 0.001}}
    assert decide({"b": d(0.02, 0.001)}, higher_is_better=False)["state"] == "control_better"
    assert decide({"b": d(-30.0, 0.001)}, higher_is_better=False)["state"] == "winner"  # faster
    assert decide({"b": d(0.02, 0.2)})["state"] == "no_difference"
    assert decide({})["state"] == "no_difference"
    # the largest significant improvement wins; a worse variant beside a winner does not stop it
    assert decide({"b": d(0.05, 0.001), "c": d(0.08, 0.01), "e": d(-0.1, 1e-6)})["variant"] == "c"
    verdict = decide({"b": d(-0.05, 0.001), "c": d(-0.08, 0.0001), "e": d(0.01, 0.5)})
    assert (verdict["state"], verdict["variant"]) == ("control_better", "c")
    assert "Holm" in verdict["reason"]


def test_decision_applies_holm():
    assert decide({"b": d(0.02, 0.03)})["state"] == "winner"
    verdict = decide({"b": d(0.02, 0.03), "c": d(0.03, 0.04)})  # Holm: 2 x 0.03 = 0.06, then max(0.06, 0.04)
    assert verdict["state"] == "no_difference"
    assert verdict["adjusted_p_values"] == {"b": approx(0.06), "c": approx(0.06)}
    verdict = decide({"b": d(0.02, 0.01), "c": d(0.03, 0.04)})  # 2 x 0.01, then 0.04: both pass, c is larger
    assert (verdict["state"], verdict["variant"]) == ("winner", "c")
    # an undefined comparison (a variant without runs) still counts as a test
    verdict = decide({"b": d(0.02, 0.03), "c": Difference(None, None, None, None, None, False)})
    assert verdict["state"] == "no_difference" and verdict["adjusted_p_values"] == {"b": approx(0.06), "c": None}


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(30)
    for size in (1, 2, 3, 7):
        p_values = rng.uniform(0, 0.1, size)
        adjusted = decide({f"v{i}": d(0.01, float(p)) for i, p in enumerate(p_values)})["adjusted_p_values"]
        assert list(adjusted.values()) == [approx(p) for p in multipletests(p_values, method="holm")[1]]
