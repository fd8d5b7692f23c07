"""The reports' serializers: the period and filters every report reads from the query string (input), and the
answer of each report (output: what the views send, so what the OpenAPI schema says is what comes)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from intentsite.serializers import QueryCharField, QueryChoiceField, QueryIntegerField, StrictSerializer

# The longest value each filter can match: what the detect API takes for a module, a role or a tab, a catalog
# intent, the mirror's columns for a model and a prompt version. (Every filter at its longest, in 4-byte characters
# percent-encoded, is past the web tier's request line of 8,190 bytes, gunicorn.conf.py: gunicorn answers 400.)
FILTER_MAX_LENGTHS = {"module": 100, "user_role": 100, "tab": 100, "model_name": 200, "prompt_version": 64,
                      "intent": 100, "experiment": 100, "variant": 100}
EARLIEST_UNTIL = date(1970, 1, 1)
# `until` as the schema says it: a calendar date written YYYY-MM-DD, from 1970-01-01 (MLflow's epoch) to 9999-12-31.
UNTIL_PATTERN = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
DATE_WRITTEN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


# --- Input ---------------------------------------------------------------------------------------------

class DaysField(QueryIntegerField):
    """`days`: absent means the endpoint's default; present, an integer 1–365 written in ASCII digits."""

    def __init__(self, *, default: int) -> None:
        super().__init__(min_value=1, max_value=365, default=default,
                         help_text="Length of the period in days (1–365), ending with `until`.")


@extend_schema_field({"type": "string", "format": "date", "pattern": UNTIL_PATTERN})
class UntilField(serializers.DateField):
    """`until`: a day written YYYY-MM-DD (Django would also take `2026-1-5`, Python `20260105`: the schema does not),
    from 1970-01-01 to 9999-12-31. Absent means today; present and empty (`until=`) is a 400."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("help_text", (
            "Last day of the period (UTC), YYYY-MM-DD from 1970-01-01 (MLflow's epoch) to 9999-12-31; default: "
            "today. Days after today are part of the period like any other, with no runs yet."))
        super().__init__(required=False, **kwargs)

    def get_value(self, dictionary):
        return dictionary.get(self.field_name, serializers.empty)

    def to_internal_value(self, value):
        if not isinstance(value, str) or not DATE_WRITTEN.fullmatch(value):
            self.fail("invalid", format="YYYY-MM-DD")
        day = super().to_internal_value(value)
        if day < EARLIEST_UNTIL:
            raise serializers.ValidationError(f"Must be {EARLIEST_UNTIL.isoformat()} or later (MLflow's epoch).")
        return day


class ReportFilterSerializer(StrictSerializer):
    """The period (`days` up to `until`, default today UTC) and the optional filters of every report. Unknown
    parameters are a 400 that names them (a typo such as `?modul=banking` must not answer for all modules)."""

    days = DaysField(default=30)
    until = UntilField()
    module = QueryCharField(max_length=FILTER_MAX_LENGTHS["module"], help_text="Only runs of this module.")
    user_role = QueryCharField(max_length=FILTER_MAX_LENGTHS["user_role"], help_text="Only runs of this user role.")
    tab = QueryCharField(max_length=FILTER_MAX_LENGTHS["tab"], help_text="Only runs of this tab (`current_tab`).")
    model_name = QueryCharField(max_length=FILTER_MAX_LENGTHS["model_name"], help_text="Only runs of this model.")
    intent = QueryCharField(max_length=FILTER_MAX_LENGTHS["intent"],
                            help_text="Only runs that detected this intent (`out_of_scope` included).")
    prompt_version = QueryCharField(max_length=FILTER_MAX_LENGTHS["prompt_version"],
                                    help_text="Only runs of this prompt version.")
    experiment = QueryCharField(max_length=FILTER_MAX_LENGTHS["experiment"],
                                help_text="Only runs of this live prompt experiment (its name).")
    variant = QueryCharField(max_length=FILTER_MAX_LENGTHS["variant"],
                             help_text="Only runs of this arm (`control` or a variant's name); with `experiment`.")


class WeekFilterSerializer(ReportFilterSerializer):
    """The period of the reports that look at a week by default."""

    days = DaysField(default=7)


class FullReportFilterSerializer(ReportFilterSerializer):
    """The full report's period and filters, and the format of its answer."""

    format = QueryChoiceField(choices=["json", "csv"], help_text=(
        "`csv`: the daily trends table as a CSV download (also chosen by `Accept: text/csv`); default: json."))


# --- Output ------------------------------------------------------------------------------------------------

class PeriodSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    since = serializers.DateField()
    until = serializers.DateField()


class FiltersSerializer(serializers.Serializer):
    module = serializers.CharField(required=False)
    user_role = serializers.CharField(required=False)
    tab = serializers.CharField(required=False)
    model_name = serializers.CharField(required=False)
    prompt_version = serializers.CharField(required=False)
    intent = serializers.CharField(required=False)
    experiment = serializers.CharField(required=False)
    variant = serializers.CharField(required=False)


class HeaderSerializer(serializers.Serializer):
    period = PeriodSerializer()
    filters = FiltersSerializer()


def _rate(**kwargs: Any) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, min_value=0, max_value=1, **kwargs)


def _ms(**kwargs: Any) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, **kwargs)


class ResponseTimeSerializer(serializers.Serializer):
    avg = _ms()
    p50 = _ms(help_text=("Nearest-rank, from the rollups' latency sketches: within 1 % of exact and never outside "
                         "the observed minimum and maximum."))
    p95 = _ms()
    p99 = _ms()


class TokensSerializer(serializers.Serializer):
    prompt = serializers.IntegerField()
    completion = serializers.IntegerField()
    total = serializers.IntegerField()


class ScalarRowsSerializer(serializers.ListSerializer):
    """A list of rows whose every field is a JSON scalar that the selector already wrote as it is sent (text, an
    int, a float or null; a day as its ISO text): each row is copied, its declared fields alone, not represented field
    by field (DRF's call per field is ~1 µs: the full report's 250 such rows cost ~0.5 ms of its ~9, measured).
    The tests hold the result equal to DRF's own representation (tests/analytics/test_reports_api.py)."""

    def to_representation(self, data):
        names = list(self.child.fields)
        return [{name: row[name] for name in names} for row in data]


class ScalarRowSerializer(serializers.Serializer):
    """A row of JSON scalars (see `ScalarRowsSerializer`), sent in lists."""

    class Meta:
        list_serializer_class = ScalarRowsSerializer


def _share_serializer(name: str) -> type[serializers.Serializer]:
    return type(f"{name.title().replace('_', '')}ShareSerializer", (ScalarRowSerializer,), {
        name: serializers.CharField(), "runs": serializers.IntegerField(), "share": _rate()})


class SampledAccuracySerializer(serializers.Serializer):
    labelled = serializers.IntegerField(help_text="Labelled detections that the review queue served at random.")
    correct = serializers.IntegerField()
    accuracy = _rate(help_text="Their share that was right: an unbiased estimate (null: none labelled).")
    ci95 = serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2, allow_null=True,
                                help_text="Its 95 % Wilson interval [low, high] (null: none labelled).")


class OverviewBodySerializer(serializers.Serializer):
    total_runs = serializers.IntegerField()
    success_rate = _rate()
    error_rate = _rate()
    avg_confidence = _rate()
    response_time_ms = ResponseTimeSerializer()
    template_match_rate = _rate()
    out_of_scope_rate = _rate()
    fallback_rate = _rate()
    tokens = TokensSerializer()
    cost_usd = serializers.FloatField()
    labelled_runs = serializers.IntegerField(help_text="Runs with user feedback.")
    accuracy = _rate(help_text="Share of labelled runs whose detection was right (null: none labelled).")
    sampled_accuracy = SampledAccuracySerializer(help_text=(
        "Accuracy from the labels of detections the review queue's `random` strategy served (a uniform sample): "
        "unbiased, where `accuracy` counts every label (users label what looked wrong)."))
    intent_distribution = _share_serializer("intent")(many=True)
    user_roles = _share_serializer("user_role")(many=True)
    modules = _share_serializer("module")(many=True)


class TrendDaySerializer(ScalarRowSerializer):
    day = serializers.DateField()
    runs = serializers.IntegerField()
    success_rate = _rate()
    avg_confidence = _rate()
    p50_ms = _ms()
    p95_ms = _ms()
    out_of_scope_rate = _rate()
    error_rate = _rate()


class TrendsBodySerializer(serializers.Serializer):
    days = TrendDaySerializer(many=True)


class ErrorCategorySerializer(serializers.Serializer):
    error_category = serializers.CharField()
    count = serializers.IntegerField(help_text="Failed runs of this category.")
    fallbacks = serializers.IntegerField(help_text="Runs of this category the local backend answered instead.")
    runs = serializers.IntegerField(help_text="All runs that recorded this category.")


class ErrorTypeSerializer(serializers.Serializer):
    error_type = serializers.CharField()
    error_category = serializers.CharField()
    count = serializers.IntegerField(help_text="Failed runs of this type.")
    sample_run_id = serializers.CharField(allow_null=True, help_text="The newest failed run of this type.")


class ErrorDaySerializer(ScalarRowSerializer):
    day = serializers.DateField()
    runs = serializers.IntegerField()
    errors = serializers.IntegerField()
    error_rate = _rate()


class FailingRunSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    request_id = serializers.CharField()
    start_time = serializers.DateTimeField()
    error_category = serializers.CharField()
    error_type = serializers.CharField()
    mlflow_url = serializers.URLField(allow_null=True, help_text="The run in the MLflow UI (null: MLFLOW_UI_URL unset).")


class ErrorsBodySerializer(serializers.Serializer):
    total_errors = serializers.IntegerField()
    error_rate = _rate()
    by_category = ErrorCategorySerializer(many=True)
    by_type = ErrorTypeSerializer(many=True)
    per_day = ErrorDaySerializer(many=True)
    latest = FailingRunSerializer(many=True)


class AnswersSerializer(serializers.Serializer):
    runs = serializers.IntegerField()
    avg_confidence = _rate()
    avg_ms = _ms()
    p50_ms = _ms()
    p95_ms = _ms()
    labelled_runs = serializers.IntegerField()
    accuracy = _rate()


class ModelSerializer(serializers.Serializer):
    model_name = serializers.CharField(help_text="The configured model (`model_name` param of the runs).")
    runs = serializers.IntegerField()
    success_rate = _rate(help_text="Runs without an error (a fallback after an LM failure is an error).")
    lm_success_rate = _rate(help_text="Runs the model itself answered without an error.")
    fallback_rate = _rate(help_text="Runs the local backend answered because the model failed.")
    error_rate = _rate()
    avg_confidence = _rate(help_text="Of the model's own answers.")
    avg_ms = _ms(help_text="Of the model's own answers.")
    p50_ms = _ms(help_text="Of the model's own answers.")
    p95_ms = _ms(help_text="Of the model's own answers.")
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost_usd = serializers.FloatField()
    labelled_runs = serializers.IntegerField()
    accuracy = _rate()
    own_answers = AnswersSerializer(help_text="The answers the model gave itself.")
    fallback_answers = AnswersSerializer(help_text="The answers the local backend gave when the model failed.")


class ModelComparisonBodySerializer(serializers.Serializer):
    models = ModelSerializer(many=True)


class EvaluationSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    in_scope_accuracy = _rate()
    oos_recall = _rate()
    macro_f1 = _rate()
    latency_p50_ms = _ms()
    examples = serializers.IntegerField(allow_null=True)
    ece = serializers.FloatField(allow_null=True, help_text="Expected calibration error of its confidences.")
    brier = serializers.FloatField(allow_null=True, help_text="Brier score of its confidences.")
    evaluated_at = serializers.DateTimeField()


class PromptVersionSerializer(serializers.Serializer):
    prompt_version = serializers.CharField()
    first_seen = serializers.DateTimeField(help_text="First run of this version in the period.")
    last_seen = serializers.DateTimeField(help_text="Last run of this version in the period.")
    runs = serializers.IntegerField()
    avg_confidence = _rate()
    avg_ms = _ms()
    p95_ms = _ms()
    error_rate = _rate()
    out_of_scope_rate = _rate()
    labelled_runs = serializers.IntegerField()
    accuracy = _rate()
    evaluation = EvaluationSerializer(allow_null=True, help_text="Latest offline evaluation of this version.")


class PromptAnalysisBodySerializer(serializers.Serializer):
    versions = PromptVersionSerializer(many=True)


class SlaSerializer(serializers.Serializer):
    p95_ms_target = serializers.FloatField()
    error_rate_target = serializers.FloatField()
    days_with_runs = serializers.IntegerField()
    days_meeting_p95 = serializers.IntegerField()
    days_meeting_error_rate = serializers.IntegerField()
    share_meeting_p95 = _rate()
    share_meeting_error_rate = _rate()


class ConfusionCellSerializer(serializers.Serializer):
    expected = serializers.CharField()
    detected = serializers.CharField()
    count = serializers.IntegerField()


class IntentScoreSerializer(serializers.Serializer):
    intent = serializers.CharField()
    precision = _rate()
    recall = _rate()
    f1 = _rate()
    support = serializers.IntegerField()


class ReportBodySerializer(serializers.Serializer):
    overview = OverviewBodySerializer()
    trends = TrendsBodySerializer()
    errors = ErrorsBodySerializer()
    model_comparison = ModelComparisonBodySerializer()
    prompt_analysis = PromptAnalysisBodySerializer()
    sla = SlaSerializer()


# Each report's answer: the period and filters, then its body.

class OverviewReportSerializer(HeaderSerializer, OverviewBodySerializer):
    pass


class TrendsReportSerializer(HeaderSerializer, TrendsBodySerializer):
    pass


class ErrorsReportSerializer(HeaderSerializer, ErrorsBodySerializer):
    pass


class ModelComparisonReportSerializer(HeaderSerializer, ModelComparisonBodySerializer):
    pass


class PromptAnalysisReportSerializer(HeaderSerializer, PromptAnalysisBodySerializer):
    pass


class FullReportSerializer(HeaderSerializer, ReportBodySerializer):
    pass


class ConfusionReportSerializer(HeaderSerializer):
    labelled_runs = serializers.IntegerField()
    accuracy = _rate()
    matrix = ConfusionCellSerializer(many=True)
    per_intent = IntentScoreSerializer(many=True)
