"""The experiments API's input and output: strict types and the experiment contract's rules (weights that leave the
control traffic, known prompt versions, unique arm names), secrets shown only to those who may change experiments."""

from __future__ import annotations

import re

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import APIException

from analytics.monitors.delivery import channel_shown, channel_valid
from analytics.monitors.serializers import ChannelsField, ChannelUnknown, KeyedDictField
from intentsite.serializers import (
    NestedListField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictNestedSerializer,
    StrictSerializer,
)

from ..models import Experiment, PromptVersion
from .results import GUARDRAILS

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", re.ASCII)
NAME_PATTERN = f"^{NAME.pattern}$"
MAX_VARIANTS = 5
SCOPE_KEYS = ("module", "user_role")


class DesignConflict(APIException):
    """A design whose parts do not fit together or with this service (unknown prompt versions, weights that leave the
    control no traffic, two arms of one name): a 409 that says which."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "design_conflict"


@extend_schema_field({"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1})
class WeightField(StrictFloatField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not value > 0:
            raise serializers.ValidationError("Must be above 0.")
        return value


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^(?!control$)[A-Za-z0-9][A-Za-z0-9._-]*$"})
class ArmNameField(StrictCharField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not NAME.fullmatch(value) or value == "control":
            raise serializers.ValidationError("Letters, digits, '.', '_' and '-', and not `control`.")
        return value


class VariantSerializer(StrictNestedSerializer):
    name = ArmNameField(max_length=100, required=False, help_text=(
        "The arm's name (letters, digits, . _ -; not `control`); default variant_1, variant_2, ..."))
    prompt_version = StrictCharField(max_length=32)
    weight = WeightField(max_value=1.0, help_text=(
        "ab: its share of the traffic in scope (the control has what the variants leave); shadow: the share of "
        "requests it also answers, in the background."))


class VariantsField(NestedListField):
    """[{name, prompt_version, weight}]."""

    child = VariantSerializer()
    item = "variant"


@extend_schema_field({"type": "object", "additionalProperties": False, "properties": {
    key: {"type": "string", "minLength": 1, "maxLength": 100} for key in SCOPE_KEYS}})
class ScopeField(KeyedDictField):
    child = StrictCharField(max_length=100)
    keys = SCOPE_KEYS
    noun = "scope key(s)"


@extend_schema_field({"type": "object", "additionalProperties": False, "properties": {
    key: {"type": "number", "minimum": 0, **({"maximum": 1} if key.endswith("rate_max") else {})}
    for key in GUARDRAILS}})
class GuardrailsField(KeyedDictField):
    child = StrictFloatField(min_value=0.0)
    keys = tuple(GUARDRAILS)
    noun = "guardrail(s)"

    def checked(self, values: dict) -> dict:
        for key in ("error_rate_max", "fallback_rate_max"):
            if key in values and values[key] > 1:
                raise serializers.ValidationError(f"{key}: a rate, from 0 to 1.")
        return values


class ExperimentSerializer(StrictSerializer, serializers.ModelSerializer):
    name = serializers.RegexField(NAME_PATTERN, max_length=100, help_text=(
        "Letters, digits, '.', '_' and '-' (the `experiment` tag of its runs, and the reports' filter)."))
    description = StrictCharField(max_length=2000, required=False, allow_blank=True, default="")
    mode = serializers.ChoiceField(choices=Experiment.Mode.choices, default=Experiment.Mode.AB)
    control = StrictCharField(max_length=32, help_text="A prompt version (see the detect answers' `prompt_version`).")
    variants = VariantsField(min_length=1, max_length=MAX_VARIANTS)
    assignment = serializers.ChoiceField(choices=Experiment.Assignment.choices, default=Experiment.Assignment.SUBJECT)
    scope = ScopeField(required=False, default=dict, help_text="Which requests take part (empty: all).")
    primary_metric = serializers.ChoiceField(choices=Experiment.Metric.choices, default=Experiment.Metric.ACCURACY)
    guardrails = GuardrailsField(required=False, default=dict)
    min_runs_per_variant = StrictIntegerField(min_value=10, max_value=10_000_000, default=1000)
    alpha = StrictFloatField(min_value=0.001, max_value=0.2, default=0.05)
    minimum_effect = StrictFloatField(min_value=0.0, required=False, allow_null=True, default=None, help_text=(
        "The smallest absolute difference in the primary metric worth detecting: sizes `runs_needed_per_variant`."))
    channels = ChannelsField(max_length=10, required=False, default=list, help_text=(
        "Told when it is rolled back or decided: the monitors' URLs (apprise, signed://, log://)."))
    arms = serializers.SerializerMethodField()
    webhook_secret = serializers.SerializerMethodField(help_text="Signs signed:// notifications; shown to changers.")

    class Meta:
        model = Experiment
        fields = ["id", "name", "description", "mode", "control", "variants", "assignment", "scope", "primary_metric",
                  "guardrails", "min_runs_per_variant", "alpha", "minimum_effect", "channels", "status", "arms",
                  "decision", "started_at", "ended_at", "created_at", "updated_at", "mlflow_run_id", "webhook_secret"]
        read_only_fields = ["status", "decision", "started_at", "ended_at", "created_at", "updated_at",
                            "mlflow_run_id"]

    def _may_change(self) -> bool:
        request = self.context.get("request")
        return bool(request and request.user.has_perm("intent.change_experiment"))

    @extend_schema_field(serializers.ListField(child=serializers.DictField()))
    def get_arms(self, experiment: Experiment) -> list[dict]:
        return experiment.arms()

    @extend_schema_field({"type": "string", "nullable": True})
    def get_webhook_secret(self, experiment: Experiment) -> str | None:
        return experiment.webhook_secret if self._may_change() else None

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not self._may_change():  # channel URLs hold tokens
            data["channels"] = [channel_shown(url) for url in instance.channels]
        return data

    def validate_name(self, value: str) -> str:
        if not NAME.fullmatch(value):  # `$` also matches before a final newline
            raise serializers.ValidationError("Letters, digits, '.', '_' and '-' only.")
        return value

    def validate_channels(self, value: list[str]) -> list[str]:
        wrong = [url for url in value if not channel_valid(url)]
        if wrong:
            raise ChannelUnknown({"channels": [f"No notification plugin of this service can load {channel_shown(url)}."
                                               for url in wrong]})
        return value

    def validate(self, attrs):
        merged = {name: getattr(self.instance, name) for name in ("mode", "control", "variants")} if self.instance else {}
        merged.update(attrs)
        variants = [dict(variant) for variant in merged.get("variants") or []]
        for index, variant in enumerate(variants, start=1):
            variant.setdefault("name", f"variant_{index}")
        names = [variant["name"] for variant in variants]
        if len(set(names)) != len(names):
            raise DesignConflict({"variants": ["Arm names must differ."]})
        if merged.get("mode", Experiment.Mode.AB) == Experiment.Mode.AB and sum(v["weight"] for v in variants) >= 1:
            raise DesignConflict({"variants": ["ab: the weights must sum below 1 (the control answers the rest)."]})
        versions = {merged.get("control"), *(variant["prompt_version"] for variant in variants)} - {None}
        known = set(PromptVersion.objects.filter(version__in=versions).values_list("version", flat=True))
        if versions - known:
            raise DesignConflict({"control" if merged.get("control") not in known else "variants": [
                f"Unknown prompt version(s): {', '.join(sorted(versions - known))} (a version is known once a detector "
                "answered as it, or optimize_intents / create_prompt_version saved it)."]})
        if "variants" in attrs:
            attrs["variants"] = variants
        return super().validate(attrs)


class ActionSerializer(StrictSerializer):
    reason = StrictCharField(max_length=500, required=False, default="stopped by hand")


class PromoteSerializer(StrictSerializer):
    variant = StrictCharField(max_length=100, required=False, default="", allow_blank=True, help_text=(
        "The arm to activate (default: the decided winner)."))
