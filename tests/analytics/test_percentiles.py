"""Every percentile the API returns is within 1 % of the exact nearest-rank percentile of the same runs and never
outside their observed [min, max]: random latency sets logged in a real MLflow store, mirrored by the real sync,
read through the reports (rollups, a single filter's rollups, and raw rows under two filters)."""

from __future__ import annotations

import math
import random

import pytest
from rest_framework.test import APIClient

from analytics.mirror.sync import runs_sync
from tests.analytics.conftest import DAY0_MS, DAY_MS
from tests.analytics.reference import nearest_rank

pytestmark = pytest.mark.django_db(transaction=True)  # outside a transaction: the attached path on SQLite

UNTIL = {"until": "2026-11-22", "days": 3}  # DAY0 (2026-11-20) and the two days after
GPT, LOCAL = "openai/gpt-4o-mini", "local/tfidf-linear"
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


def latencies_for(case: str, rng: random.Random) -> list[float]:
    if case == "one_slow_run":  # the report that started it: one run of 10,512 ms, p95 said 11,007
        return [10_512.0]
    if case == "two_runs":
        return [rng.uniform(0.5, 5), rng.uniform(500, 3000)]
    if case == "identical":
        return [791.0] * 40
    if case == "heavy_tail":
        return [round(rng.paretovariate(0.8) * 2, 3) for _ in range(300)]
    if case == "tiny":
        return [round(rng.uniform(0.001, 0.2), 3) for _ in range(120)]
    return [math.exp(rng.gauss(6.5, 0.8)) if rng.random() < 0.3 else math.exp(rng.gauss(0.3, 0.6))
            for _ in range(400)]  # a mix of local and LM answers


def assert_close(estimate: float | None, values: list[float], q: float, where: str) -> None:
    exact = nearest_rank(values, q)
    if exact is None:
        assert estimate is None, where
        return
    assert estimate is not None, where
    assert min(values) <= estimate <= max(values), (where, estimate, min(values), max(values))
    assert abs(estimate - exact) <= 0.01 * exact, (where, q, estimate, exact)


@pytest.mark.parametrize("case", ["one_slow_run", "two_runs", "identical", "heavy_tail", "tiny", "mixed"])
def test_api_percentiles_are_within_one_percent_of_exact_and_inside_min_max(case, run_logger, staff_client):
    rng = random.Random(case)
    runs = []
    for index, latency in enumerate(latencies_for(case, rng)):
        run = {"latency_ms": latency, "day": index % 3, "module": rng.choice(["banking", "travel"]),
               "model": rng.choice([GPT, LOCAL]), "prompt_version": rng.choice(["v1", "v2"])}
        run_logger.log(start_ms=DAY0_MS + run["day"] * DAY_MS + index * 1000, latency_ms=latency, module=run["module"],
                       model=run["model"], prompt_version=run["prompt_version"])
        runs.append(run)
    runs_sync()

    def api(endpoint: str, client: APIClient = staff_client, **params) -> dict:
        response = client.get(f"/api/analytics/mlflow/{endpoint}", {**UNTIL, **params})
        assert response.status_code == 200, response.content
        return response.json()

    def latencies(**match) -> list[float]:
        return [run["latency_ms"] for run in runs if all(run[name] == value for name, value in match.items())]

    overview = api("overview")["response_time_ms"]
    for name, q in QUANTILES.items():
        assert_close(overview[name], latencies(), q, f"overview {name}")
    for module in ("banking", "travel"):  # one filter: that module's rollups
        filtered = api("overview", module=module)["response_time_ms"]
        for name, q in QUANTILES.items():
            assert_close(filtered[name], latencies(module=module), q, f"overview module={module} {name}")
    raw = api("overview", module="banking", model_name=GPT)["response_time_ms"]  # two filters: raw rows
    for name, q in QUANTILES.items():
        assert_close(raw[name], latencies(module="banking", model=GPT), q, f"raw {name}")
    for row in api("trends")["days"]:
        day = (int(row["day"][-2:]) - 20)
        assert_close(row["p50_ms"], latencies(day=day), 0.5, f"trends {row['day']} p50")
        assert_close(row["p95_ms"], latencies(day=day), 0.95, f"trends {row['day']} p95")
    for row in api("model-comparison")["models"]:
        assert_close(row["p50_ms"], latencies(model=row["model_name"]), 0.5, f"model {row['model_name']} p50")
        assert_close(row["p95_ms"], latencies(model=row["model_name"]), 0.95, f"model {row['model_name']} p95")
    for row in api("prompt-analysis")["versions"]:
        assert_close(row["p95_ms"], latencies(prompt_version=row["prompt_version"]), 0.95, row["prompt_version"])
