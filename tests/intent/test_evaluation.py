"""Evaluation figures equal figures computed by hand; labelled files in three formats; clear errors."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from intent.program import OUT_OF_SCOPE
from intent.program.evaluation import DatasetFormatError, dataset_read, report_build


def test_report_figures_equal_hand_computed_ones():
    labels = ["a", "a", "b", "b", OUT_OF_SCOPE, OUT_OF_SCOPE]
    predictions = ["a", "b", "b", OUT_OF_SCOPE, OUT_OF_SCOPE, "a"]
    report = report_build(labels=labels, predictions=predictions, latencies_ms=[1, 2, 3, 4, 5, 6])
    assert report.in_scope_accuracy == pytest.approx(2 / 4)
    assert report.oos_recall == pytest.approx(1 / 2)
    # per class F1: a: p=1/2 r=1/2 -> 0.5; b: p=1/2 r=1/2 -> 0.5; oos: p=1/2 r=1/2 -> 0.5
    assert report.macro_f1 == pytest.approx(0.5)
    assert report.latency_ms_p50 == pytest.approx(3.5)


def test_dataset_formats(tmp_path):
    clinc = tmp_path / "clinc.json"
    clinc.write_text(json.dumps({"test": [["hi", "greeting"]], "oos_test": [["blah", "oos"]]}))
    csv_file = tmp_path / "set.csv"
    csv_file.write_text("message,intent\nhi,greeting\nblah,oos\n")
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text('{"message": "hi", "intent": "greeting"}\n{"message": "blah", "intent": "out_of_scope"}\n')
    expected = [("hi", "greeting"), ("blah", OUT_OF_SCOPE)]
    for path in (clinc, csv_file, jsonl):
        assert [(e.message, e.intent) for e in dataset_read(path)] == expected


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"message": "hi", "intent": "a"}\n{"message": 3}\n', "line 2"),
        ("bad.jsonl", '{"message": "hi", "intent": "a"}\n{oops\n', "line 2"),
        ("bad.csv", "text,label\nhi,a\n", "line 1"),
        ("bad.csv", "message,intent\nhi,a\n,b\n", "line 3"),
        ("bad.json", '{"train": []}', "no split 'test'"),
    ],
)
def test_malformed_dataset_names_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetFormatError, match=message):
        dataset_read(path)


@pytest.mark.django_db
def test_evaluate_intents_command_prints_the_figures(tmp_path, small_catalog, mlflow_store, capsys):
    path = tmp_path / "set.csv"
    path.write_text("message,intent\nwhat is my balance,balance\nsend money to my savings,transfer\n"
                    "what is the capital of peru,oos\n")
    call_command("evaluate_intents", "--dataset", str(path))
    out = capsys.readouterr().out
    assert "examples=3" in out
    assert "in_scope_accuracy=100.00%" in out
    assert "model=local/tfidf-linear" in out


@pytest.mark.django_db
def test_evaluate_intents_command_refuses_a_bad_file(tmp_path):
    path = tmp_path / "set.csv"
    path.write_text("wrong,header\n")
    with pytest.raises(CommandError, match="line 1"):
        call_command("evaluate_intents", "--dataset", str(path))
