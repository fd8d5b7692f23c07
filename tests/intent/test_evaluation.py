"""Evaluation figures equal figures computed by hand; labelled files in three formats; clear errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from intent.program import OUT_OF_SCOPE
from intent.program.evaluation import (
    DatasetFormatError,
    LabelledExample,
    dataset_read,
    examples_sample,
    report_build,
)


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


# --- --limit: a sample stratified by intent, out-of-scope included, seeded ----------------------------


@pytest.fixture(scope="module")
def clinc_test_split(clinc150) -> list[LabelledExample]:
    """CLINC150's test split as evaluate_intents reads it: 150 intents x 30, then 1,000 out-of-scope."""
    return [LabelledExample(text, OUT_OF_SCOPE if intent == "oos" else intent)
            for text, intent in clinc150["test"] + clinc150["oos_test"]]


def test_limit_sample_is_stratified_by_intent_out_of_scope_included(clinc_test_split):
    sample = examples_sample(clinc_test_split, limit=300, seed=0)
    counts = Counter(e.intent for e in sample)
    assert len(sample) == 300
    assert len(counts) == 151  # every intent and out_of_scope (the first 300 rows: 10 intents, no OOS)
    assert counts[OUT_OF_SCOPE] == 54  # 300 x 1,000 / 5,500 = 54.5
    population = Counter(e.intent for e in clinc_test_split)
    for intent, size in population.items():  # proportional shares, within one example
        assert abs(counts[intent] - 300 * size / len(clinc_test_split)) < 1, intent
    assert set(sample) <= set(clinc_test_split) and len(set(sample)) == 300  # drawn without replacement
    assert sample == examples_sample(clinc_test_split, limit=300, seed=0)  # stable
    other = examples_sample(clinc_test_split, limit=300, seed=1)
    assert other != sample and len(other) == 300 and len({e.intent for e in other}) == 151


def test_limit_sample_keeps_every_stratum_once_it_can(clinc_test_split):
    # 151 strata, 151 examples: one each (a proportional rounding alone would leave intents out)
    assert Counter(Counter(e.intent for e in examples_sample(clinc_test_split, limit=151, seed=3)).values()) == {1: 151}
    # a stratum of a single example is kept too
    tiny = [LabelledExample(f"m{i}", "big") for i in range(98)] + [LabelledExample("x", "small"),
                                                                    LabelledExample("y", OUT_OF_SCOPE)]
    assert Counter(e.intent for e in examples_sample(tiny, limit=5, seed=0)) == {"big": 3, "small": 1,
                                                                                  OUT_OF_SCOPE: 1}
    # fewer examples than strata: exactly N all the same
    assert len(examples_sample(clinc_test_split, limit=10, seed=0)) == 10
    # N >= the dataset, or no limit: the whole dataset, in its order
    for limit in (len(tiny), 10_000, None):
        assert examples_sample(tiny, limit=limit, seed=0) == tiny


@pytest.mark.django_db
def test_evaluate_intents_limit_prints_how_the_sample_was_drawn(tmp_path, small_catalog, clinc150, capsys):
    path = tmp_path / "clinc.json"
    path.write_text(json.dumps({"test": clinc150["test"], "oos_test": clinc150["oos_test"]}))
    call_command("evaluate_intents", "--dataset", str(path), "--limit", "300", "--no-mlflow")
    out = capsys.readouterr().out
    assert "sample: 300 of 5,500 examples, stratified by intent (151 strata incl. out_of_scope), seed 0" in out
    assert "examples=300" in out and "oos_recall=n/a" not in out
    small = tmp_path / "set.csv"
    small.write_text("message,intent\nwhat is my balance,balance\nwhat is the capital of peru,oos\n")
    call_command("evaluate_intents", "--dataset", str(small), "--limit", "9000", "--seed", "7", "--no-mlflow")
    out = capsys.readouterr().out
    assert "sample: all 2 examples (the limit 9,000 is not smaller than the set)" in out and "examples=2" in out
