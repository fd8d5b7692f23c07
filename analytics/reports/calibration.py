"""GET /api/analytics/mlflow/calibration: does a confidence of 0.8 mean 80 % right? Per model and prompt version,
from the period's labelled runs (raw rows: few, on the partial index `mirroredrun_labelled`) and the version's
latest offline evaluation: reliability bins, expected calibration error, Brier score, and the out-of-scope threshold
that reaches a target precision with what coverage it costs."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from rest_framework import serializers

from intentsite.calibration import reliability, threshold_for_precision
from intentsite.serializers import QueryIntegerField

from .scope import Scope
from .selectors import evaluations_latest_get
from .serializers import EvaluationSerializer, HeaderSerializer, ReportFilterSerializer

PROPORTION_WRITTEN = re.compile(r"(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)", re.ASCII)


def calibration_get(*, scope: Scope, bins: int = 10, target_precision: float = 0.9) -> dict[str, Any]:
    """Per (model, prompt version) with labelled runs in the period, the most labelled first."""
    groups: dict[tuple[str, str], tuple[list[float], list[bool]]] = defaultdict(lambda: ([], []))
    for model, version, confidence, correct in scope.raw_runs().filter(
            is_correct__isnull=False, confidence_score__isnull=False).values_list(
            "model_name", "prompt_version", "confidence_score", "is_correct").order_by():
        confidences, verdicts = groups[(model, version)]
        confidences.append(confidence)
        verdicts.append(correct)
    evaluations = evaluations_latest_get(prompt_versions=[version for _, version in groups]) if groups else {}
    rows = []
    for (model, version), (confidences, verdicts) in sorted(groups.items(), key=lambda item: (-len(item[1][0]),
                                                                                                item[0])):
        measured = reliability(confidences, verdicts, bins=bins)
        rows.append({
            "model_name": model,
            "prompt_version": version,
            "labelled_runs": measured.pop("runs"),
            **measured,
            "threshold": threshold_for_precision(confidences, verdicts, target=target_precision),
            "evaluation": evaluations.get(version),
        })
    return scope.header() | {"bins": bins, "target_precision": target_precision, "groups": rows}


# --- HTTP -------------------------------------------------------------------------------------------------------

class ProportionField(serializers.FloatField):
    """A proportion in the query string, written in ASCII decimals from 0 to 1 (`0.9`, `.95`, `1`)."""

    def get_value(self, dictionary):
        return dictionary.get(self.field_name, serializers.empty)

    def to_internal_value(self, data):
        if isinstance(data, str) and not PROPORTION_WRITTEN.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class CalibrationFilterSerializer(ReportFilterSerializer):
    bins = QueryIntegerField(min_value=2, max_value=50, default=10, help_text="Equal-width confidence bins (2–50).")
    target_precision = ProportionField(min_value=0.5, max_value=1.0, default=0.9, help_text=(
        "The precision the threshold advice aims at (0.5–1): answers below the threshold would be out_of_scope."))


class ReliabilityBinSerializer(serializers.Serializer):
    low = serializers.FloatField(help_text="Confidences from this value ...")
    high = serializers.FloatField(help_text="... up to this one (excluded, but 1.0 for the last bin).")
    runs = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    mean_confidence = serializers.FloatField(allow_null=True)


class ThresholdAdviceSerializer(serializers.Serializer):
    target_precision = serializers.FloatField()
    threshold = serializers.FloatField(allow_null=True, help_text=(
        "The lowest confidence threshold whose kept answers reach the target precision (null: none does)."))
    precision = serializers.FloatField(allow_null=True, help_text="Share right among the answers it keeps.")
    coverage = serializers.FloatField(allow_null=True, help_text="Share of labelled runs it keeps (the rest: OOS).")
    kept = serializers.IntegerField()


class CalibrationGroupSerializer(serializers.Serializer):
    model_name = serializers.CharField(allow_blank=True)
    prompt_version = serializers.CharField(allow_blank=True)
    labelled_runs = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    mean_confidence = serializers.FloatField(allow_null=True)
    ece = serializers.FloatField(allow_null=True, help_text="Expected calibration error: Σ n_b/N·|accuracy_b − "
                                                            "mean confidence_b| over the bins.")
    brier = serializers.FloatField(allow_null=True, help_text="Mean (confidence − right)².")
    bins = ReliabilityBinSerializer(many=True)
    threshold = ThresholdAdviceSerializer()
    evaluation = EvaluationSerializer(allow_null=True, help_text=(
        "The prompt version's latest offline evaluation (`evaluate_intents`), its ECE and Brier score included."))


class CalibrationReportSerializer(HeaderSerializer):
    bins = serializers.IntegerField()
    target_precision = serializers.FloatField()
    groups = CalibrationGroupSerializer(many=True)


CALIBRATION_EXAMPLE = {
    "bins": 10, "target_precision": 0.9, "groups": [{
        "model_name": "local/tfidf-linear", "prompt_version": "3fa2c81d09be", "labelled_runs": 120,
        "accuracy": 0.86, "mean_confidence": 0.81, "ece": 0.054, "brier": 0.11,
        "bins": [{"low": 0.9, "high": 1.0, "runs": 70, "accuracy": 0.97, "mean_confidence": 0.95}],
        "threshold": {"target_precision": 0.9, "threshold": 0.62, "precision": 0.91, "coverage": 0.88, "kept": 106},
        "evaluation": None}]}
