"""Calibration: reliability bins, ECE, Brier and the threshold advice equal figures computed here by hand from the
labelled runs; per model and prompt version; the latest offline evaluation's ECE beside them; bad parameters are
400s."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from analytics.mirror.sync import runs_sync
from intent.program.evaluation import LabelledExample
from intent.services import detection_feedback_log, detection_records_log
from intent.services.evaluation import detector_evaluate

pytestmark = pytest.mark.django_db
URL = "/api/analytics/mlflow/calibration"


def by_hand(confidences: list[float], correct: list[bool], bins: int) -> dict:
    """The reference: every figure from its definition, with plain loops."""
    n = len(confidences)
    members = [[] for _ in range(bins)]
    for confidence, right in zip(confidences, correct, strict=True):
        members[min(int(confidence * bins), bins - 1)].append((confidence, right))
    rows, ece = [], 0.0
    for i, inside in enumerate(members):
        accuracy = sum(right for _, right in inside) / len(inside) if inside else None
        mean = sum(c for c, _ in inside) / len(inside) if inside else None
        rows.append({"low": i / bins, "high": (i + 1) / bins, "runs": len(inside), "accuracy": accuracy,
                     "mean_confidence": mean})
        if inside:
            ece += len(inside) / n * abs(accuracy - mean)
    brier = sum((c - (1.0 if right else 0.0)) ** 2 for c, right in zip(confidences, correct, strict=True)) / n
    return {"bins": rows, "ece": ece, "brier": brier, "accuracy": sum(correct) / n,
            "mean_confidence": sum(confidences) / n}


def advice_by_hand(confidences: list[float], correct: list[bool], target: float) -> tuple[float | None, float | None]:
    """Try every threshold; keep the lowest whose kept answers reach the target: (threshold, coverage)."""
    for threshold in sorted(set(confidences)):
        kept = [right for c, right in zip(confidences, correct, strict=True) if c >= threshold]
        if sum(kept) / len(kept) >= target:
            return threshold, len(kept) / len(confidences)
    return None, None


def test_figures_equal_the_hand_computed_ones_per_model_and_version(run_logger, staff_client):
    rng = random.Random(7)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    truth: dict[tuple[str, str], tuple[list[float], list[bool]]] = {}
    for model, version, bias in (("local/tfidf-linear", "v1", 0.0), ("openai/gpt-4o-mini", "v2", 0.25)):
        confidences, correct = [], []
        for i in range(80 if version == "v1" else 40):
            confidence = round(rng.random(), 3)
            right = rng.random() < max(0.0, confidence - bias)  # v2 is overconfident by 0.25
            run_logger.log(start_ms=int((midnight - timedelta(hours=i % 30)).timestamp() * 1000), model=model,
                           prompt_version=version, confidence=confidence,
                           extra_tags={"expected_intent": "balance" if right else "transfer"},
                           extra_metrics={"is_correct": 1.0 if right else 0.0})
            confidences.append(confidence)
            correct.append(right)
        truth[(model, version)] = (confidences, correct)
    run_logger.log(start_ms=int(midnight.timestamp() * 1000), confidence=0.5)  # unlabelled: not counted
    runs_sync()

    body = staff_client.get(URL, {"days": 3, "bins": 5, "target_precision": "0.8"}).json()
    assert body["bins"] == 5 and body["target_precision"] == 0.8
    assert [(g["model_name"], g["prompt_version"]) for g in body["groups"]] == [
        ("local/tfidf-linear", "v1"), ("openai/gpt-4o-mini", "v2")]  # the most labelled first
    for group in body["groups"]:
        confidences, correct = truth[(group["model_name"], group["prompt_version"])]
        expected = by_hand(confidences, correct, 5)
        assert group["labelled_runs"] == len(confidences)
        assert group["ece"] == pytest.approx(expected["ece"], abs=1e-12)
        assert group["brier"] == pytest.approx(expected["brier"], abs=1e-12)
        assert group["accuracy"] == pytest.approx(expected["accuracy"])
        assert group["mean_confidence"] == pytest.approx(expected["mean_confidence"])
        for got, want in zip(group["bins"], expected["bins"], strict=True):
            assert got["runs"] == want["runs"] and (got["low"], got["high"]) == (want["low"], want["high"])
            assert got["accuracy"] == pytest.approx(want["accuracy"]) and got["mean_confidence"] == pytest.approx(
                want["mean_confidence"])
        threshold, coverage = advice_by_hand(confidences, correct, 0.8)
        assert group["threshold"]["threshold"] == threshold and group["threshold"]["coverage"] == pytest.approx(
            coverage)
        assert group["threshold"]["precision"] >= 0.8
    v1, v2 = body["groups"]
    assert v2["ece"] > v1["ece"]  # the overconfident one is the worse calibrated
    # A filter narrows it like any report.
    only = staff_client.get(URL, {"days": 3, "model_name": "openai/gpt-4o-mini"}).json()["groups"]
    assert [g["prompt_version"] for g in only] == ["v2"]


@pytest.mark.parametrize("params, field", [({"bins": 1}, "bins"), ({"bins": 51}, "bins"), ({"bins": "5.0"}, "bins"),
                                           ({"target_precision": "0.4"}, "target_precision"),
                                           ({"target_precision": "1.5"}, "target_precision"),
                                           ({"target_precision": "nan"}, "target_precision"),
                                           ({"target_precision": ""}, "target_precision")])
def test_bad_parameters_are_400s_that_name_them(staff_client, params, field):
    response = staff_client.get(URL, params)
    assert response.status_code == 400 and field in response.json()


def test_the_latest_offline_evaluation_brings_its_own_calibration(api_client, small_catalog, staff_client,
                                                                   mlflow_store, django_user_model, settings):
    messages = {"what is my bank balance": "balance", "transfer 50 dollars to my savings account": "transfer",
                "do i need a visa to visit japan": "international_visa", "pay my electricity bill": "pay_bill"}
    bodies = [api_client.post("/api/intent/detect", {"message": m}, format="json").json() for m in messages]
    request_ids = [body["request_id"] for body in bodies]
    detection_records_log(request_ids=request_ids)
    for body, intent in zip(bodies, messages.values(), strict=True):
        response = api_client.post("/api/intent/feedback", {"request_id": body["request_id"], "correct_intent": intent},
                                   format="json")
        assert response.status_code == 202, response.content
    detection_feedback_log(request_ids=request_ids)
    examples = [LabelledExample(message, intent) for message, intent in messages.items()]
    result = detector_evaluate(examples=examples, dataset=Path("inline.jsonl"), split="test")
    runs_sync()
    runs_sync(experiment_name=settings.ANALYTICS_EVALUATION_EXPERIMENT_NAME)

    (group,) = staff_client.get(URL, {"days": 1}).json()["groups"]
    assert group["prompt_version"] == result.prompt_version and group["labelled_runs"] == 4
    evaluation = group["evaluation"]
    assert evaluation["run_id"] == result.run_id
    confidences = [body["confidence"] for body in bodies]
    correct = [body["intent"] == intent for body, intent in zip(bodies, messages.values(), strict=True)]
    expected = by_hand(confidences, correct, 10)  # the same detector on the same messages: the same figures
    assert evaluation["ece"] == pytest.approx(expected["ece"]) and evaluation["brier"] == pytest.approx(
        expected["brier"])
    assert group["ece"] == pytest.approx(expected["ece"])
