"""evaluate_intents logs one run in `intent_evaluation` (contract C) whose figures equal figures computed
by hand on a fixed small set, with the per-intent report and the confusion matrix picture as artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from mlflow.tracking import MlflowClient

from intent.program import OUT_OF_SCOPE
from intent.program.evaluation import confusion_figure

pytestmark = pytest.mark.django_db

FIXED_SET = (
    "message,intent\n"
    "what is my balance,balance\n"
    "send money to my savings,transfer\n"
    "how much money is in my checking account,transfer\n"  # labelled wrong on purpose: detected balance
    "what is the capital of peru,oos\n"
)


def evaluation_runs(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("intent_evaluation")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_evaluation_run_figures_equal_hand_computed_ones(tmp_path, small_catalog, mlflow_store, capsys):
    path = tmp_path / "fixed.csv"
    path.write_text(FIXED_SET)
    call_command("evaluate_intents", "--dataset", str(path))
    out = capsys.readouterr().out
    (run,) = evaluation_runs(mlflow_store)
    client = MlflowClient(mlflow_store)
    report = json.loads(Path(client.download_artifacts(run.info.run_id, "per_intent_report.json", str(tmp_path)))
                        .read_text())
    # the detector answered balance, transfer, balance, out_of_scope (asserted, so the hand figures below hold)
    assert report["confusions"] == [{"expected": "transfer", "detected": "balance", "count": 1}]
    assert report["per_intent"][OUT_OF_SCOPE]["recall"] == 1.0
    # by hand: in scope 2 right of 3; OOS 1 of 1; F1 balance p=1/2 r=1 -> 2/3, transfer p=1 r=1/2 -> 2/3, oos 1
    metrics = run.data.metrics
    assert metrics["in_scope_accuracy"] == pytest.approx(2 / 3)
    assert metrics["oos_recall"] == pytest.approx(1.0)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert metrics["examples"] == 4
    assert metrics["latency_p50_ms"] > 0
    assert report["per_intent"]["balance"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1-score": 2 / 3, "support": 1})
    # the contract's tags
    tags = run.data.tags
    assert tags["run_kind"] == "evaluation"
    assert tags["dataset"] == "fixed.csv"
    assert tags["split"] == "all"
    assert tags["model_name"] == "local/tfidf-linear"
    assert f"prompt_version={tags['prompt_version']}" in out
    assert run.info.status == "FINISHED"
    # the picture is a PNG
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"per_intent_report.json", "confusion_matrix.png"}
    picture = Path(client.download_artifacts(run.info.run_id, "confusion_matrix.png", str(tmp_path)))
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the printed figures stay
    assert "in_scope_accuracy=66.67%" in out and "oos_recall=100.00%" in out and "macro_f1=0.778" in out
    assert f"mlflow_run_id={run.info.run_id}" in out


def test_clinc150_split_and_limit(tmp_path, small_catalog, mlflow_store, clinc150, capsys):
    path = tmp_path / "clinc.json"
    path.write_text(json.dumps({"val": [pair for pair in clinc150["val"] if pair[1] in {"balance", "transfer"}],
                                "oos_val": clinc150["oos_val"][:5]}))
    call_command("evaluate_intents", "--dataset", str(path), "--split", "val", "--limit", "12")
    (run,) = evaluation_runs(mlflow_store)
    assert run.data.tags["split"] == "val"
    assert run.data.tags["dataset"] == "clinc.json"
    assert run.data.metrics["examples"] == 12
    # the first 12 would all be balance; the sample has both intents and out-of-scope (shares 5.3, 5.3, 1.3)
    assert "oos_recall" in run.data.metrics
    assert run.data.params == {"sample.limit": "12", "sample.seed": "0"}
    assert ("sample: 12 of 45 examples, stratified by intent (3 strata incl. out_of_scope), seed 0"
            in capsys.readouterr().out)


def test_no_mlflow_logs_nothing(tmp_path, small_catalog, mlflow_store, capsys):
    path = tmp_path / "fixed.jsonl"
    path.write_text('{"message": "what is my balance", "intent": "balance"}\n')
    call_command("evaluate_intents", "--dataset", str(path), "--no-mlflow")
    assert evaluation_runs(mlflow_store) == []
    assert "examples=1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"message": "hi", "intent": "balance"}\nnot json\n', "bad.jsonl: line 2"),
        ("bad.csv", "message,intent\nhi,balance\nhello,\n", "bad.csv: line 3"),
        ("bad.json", '{"test": [["hi", "balance"], ["no intent"]]}', "test item 2"),
        ("bad.json", '{"test": [\n["hi", "balance"],\n oops]}', "line 3"),
    ],
)
def test_malformed_file_is_a_command_error_naming_the_line(tmp_path, mlflow_store, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("evaluate_intents", "--dataset", str(path))
    assert evaluation_runs(mlflow_store) == []


def test_confusion_picture_for_150_intents_is_readable():
    labels = [f"intent_{i:03d}" for i in range(150)] * 2 + [OUT_OF_SCOPE] * 10
    predictions = labels[:300] + ["intent_001"] * 10
    predictions[5] = "intent_007"
    figure = confusion_figure(labels, predictions)
    heatmap, bars, *_ = figure.axes
    assert heatmap.get_xticks().size == 0 and heatmap.get_yticks().size == 0  # no 151 unreadable labels
    names = [label.get_text() for label in bars.get_yticklabels()]
    assert names[:2] == [f"{OUT_OF_SCOPE} -> intent_001", "intent_005 -> intent_007"]
