"""Fixtures of the mirror's tests: runs logged with the real MlflowClient (exactly as the intent worker logs
them: create_run with tags, one log_batch, set_terminated) into the real store of `mlflow_store`."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from django.conf import settings
from mlflow.entities import Metric, Param, ViewType
from mlflow.tracking import MlflowClient
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from analytics.mirror.sources import sources_reset

# A fixed day, so that runs land on known UTC days (2026-11-20 00:00 UTC).
DAY0_MS = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

INTENTS = ["balance", "transfer", "pay_bill", "international_visa", "exchange_rate", "out_of_scope"]
ROLES = ["customer", "admin", "agent"]
MODULES = ["banking", "travel"]
TABS = ["accounts", "cards", ""]
MODELS = ["local/tfidf-linear", "openai/gpt-4o-mini"]
PROMPT_VERSIONS = ["a1b2c3d4e5f6", "0f9e8d7c6b5a"]
ERROR_CATEGORIES = ["lm_timeout", "lm_unavailable", "parse_error"]


@pytest.fixture(autouse=True)
def fresh_sources():
    """Engines and clients of `analytics.mirror.sources` point at one test's store: forget them after it."""
    sources_reset()
    yield
    sources_reset()


@dataclass
class RunLogger:
    client: MlflowClient
    experiment_id: str

    def log(self, *, start_ms: int, intent: str = "balance", role: str = "customer", module: str = "banking",
            tab: str = "accounts", model: str = MODELS[0], prompt_version: str = PROMPT_VERSIONS[0],
            confidence: float = 0.9, latency_ms: float = 1.5, error_category: str | None = None,
            fallback: bool = False, requires_workflow: bool = False, message: str = "what is my balance",
            tokens: tuple[int, int, float] | None = None, template_match: bool = False,
            extra_metrics: dict[str, float] | None = None, extra_tags: dict[str, str] | None = None,
            extra_params: dict[str, str] | None = None, finish: bool = True, request_id: str | None = None) -> str:
        failed = error_category is not None and not fallback
        tags = {"user_role": role, "current_module": module, "current_tab": tab, "detected_intent": intent,
                "dspy_version": "3.4.1", "prompt_version": prompt_version,
                "request_id": request_id or f"req-{random.getrandbits(64):016x}",
                "status": "error" if failed else "success", "fallback_used": str(fallback).lower(),
                "answered_by": MODELS[0] if fallback else model}
        if error_category:
            tags["error_category"] = error_category
            tags["error_type"] = "TimeoutError" if error_category == "lm_timeout" else "RuntimeError"
        tags.update(extra_tags or {})
        run = self.client.create_run(self.experiment_id, start_time=start_ms, tags=tags)
        metrics = {"confidence_score": confidence, "response_time_ms": latency_ms,
                   "template_match_rate": 1.0 if template_match else 0.0,
                   "available_workflow_templates": 16.0, "available_agent_templates": 9.0}
        if tokens:
            metrics.update(prompt_tokens=float(tokens[0]), completion_tokens=float(tokens[1]), cost_usd=tokens[2])
        metrics.update(extra_metrics or {})
        params = {"model_name": model, "message_length": str(len(message)),
                  "message_word_count": str(len(message.split())), "requires_workflow": str(requires_workflow).lower(),
                  "category_source": "database"}
        params.update(extra_params or {})
        end_ms = start_ms + max(1, round(latency_ms))
        if not finish:
            return run.info.run_id
        self.client.log_batch(run.info.run_id,
                              metrics=[Metric(k, float(v), end_ms, 0) for k, v in metrics.items()],
                              params=[Param(k, v) for k, v in params.items()])
        self.client.set_terminated(run.info.run_id, status="FAILED" if failed else "FINISHED", end_time=end_ms)
        return run.info.run_id

    def log_random(self, rng: random.Random, *, start_ms: int, **overrides: Any) -> str:
        """A plausible detection: mostly fast local answers, some slow LM ones, a few failures."""
        lm = rng.random() < 0.3
        error = rng.choice(ERROR_CATEGORIES) if rng.random() < 0.15 else None
        values: dict[str, Any] = dict(
            start_ms=start_ms, intent=rng.choice(INTENTS), role=rng.choice(ROLES), module=rng.choice(MODULES),
            tab=rng.choice(TABS), model=MODELS[1] if lm else MODELS[0], prompt_version=rng.choice(PROMPT_VERSIONS),
            confidence=round(rng.random(), 4), latency_ms=math.exp(rng.gauss(6.5, 0.8)) if lm else math.exp(rng.gauss(0.3, 0.6)),
            error_category=error, fallback=bool(error) and rng.random() < 0.5, template_match=rng.random() < 0.4,
            tokens=(rng.randint(50, 400), rng.randint(5, 60), rng.random() / 1000) if lm else None,
        )
        values.update(overrides)
        return self.log(**values)

    def runs(self):
        return self.client.search_runs([self.experiment_id], run_view_type=ViewType.ALL, max_results=50_000)


@pytest.fixture
def run_logger(mlflow_store) -> RunLogger:
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name(settings.MLFLOW_EXPERIMENT_NAME)
    return RunLogger(client=client, experiment_id=experiment.experiment_id)


@pytest.fixture
def staff_client(django_user_model) -> APIClient:
    """A staff user's client, authenticated by DRF token (the way an API consumer calls the reports)."""
    staff = django_user_model.objects.create_user(username="sam", password="pw-sam-12345", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    return client


@pytest.fixture(autouse=True)
def window_rollups_cache_cleared():
    """The monitors' per-process cache of window rollup buckets starts empty in every test."""
    from analytics.monitors.reading import cache_clear

    cache_clear()
    yield
    cache_clear()
