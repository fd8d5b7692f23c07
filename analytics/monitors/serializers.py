"""The monitors API's input and output: strict types, the monitor contract's rules, secrets shown only to those
who may change the monitor."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import APIException

from intentsite.serializers import (
    NOT_BLANK,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
)

from ..models import Alert, Monitor
from .delivery import channel_shown, channel_valid
from .preview import MAX_DAYS
from .windows import FILTER_COLUMNS

MAX_CHANNELS = 10
MAX_ID = 2**31 - 1


def errors_flat(error: serializers.ValidationError) -> serializers.ValidationError:
    """A list's or dict's item errors ({"0": [...]}) as one list of messages naming the item: what the schema
    documents for a 400 (each field with a list of messages)."""
    detail = error.detail
    if isinstance(detail, dict):
        return serializers.ValidationError([f"{key}: {message}" for key, messages in detail.items()
                                            for message in (messages if isinstance(messages, list) else [messages])])
    return error


class KeyedDictField(serializers.DictField):
    """An object whose keys are among `keys` (any other is a 400 naming it and the allowed ones), its values
    `child`'s, their errors as messages naming the key. `checked` adds a field's own rules on the values."""

    keys: tuple[str, ...] = ()
    noun = "key(s)"

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not_a_dict", input_type=type(data).__name__)
        unknown = sorted(set(data) - set(self.keys))
        if unknown:
            raise serializers.ValidationError(f"Unknown {self.noun}: {', '.join(unknown)}; "
                                              f"allowed: {', '.join(self.keys)}.")
        try:
            values = super().to_internal_value(data)
        except serializers.ValidationError as error:
            raise errors_flat(error) from None
        return self.checked(values)

    def checked(self, values: dict) -> dict:
        return values


@extend_schema_field({"type": "object", "additionalProperties": False, "properties": {
    name: {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK} for name in FILTER_COLUMNS}})
class FiltersField(KeyedDictField):
    """{"module": "banking", ...}: any of module, user_role, model_name, prompt_version, each a non-blank string."""

    child = StrictCharField(max_length=200)
    keys = tuple(FILTER_COLUMNS)
    noun = "filter(s)"


class ChannelsField(serializers.ListField):
    child = StrictCharField(max_length=2000)

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as error:
            raise errors_flat(error) from None


@extend_schema_field({"type": "integer", "minimum": 5, "maximum": 10_080, "multipleOf": 5})
class WindowMinutesField(StrictIntegerField):
    def __init__(self, **kwargs) -> None:
        super().__init__(min_value=5, max_value=10_080, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value % 5:
            raise serializers.ValidationError("Must be a multiple of 5 (the rollups' finest grain).")
        return value


class ChannelUnknown(APIException):
    """A channel URL that none of the service's notification plugins (apprise's, ours) can load."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "channel_unknown"


class ChannelStatusSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    channel = serializers.CharField(help_text="The URL with its secrets hidden.")
    failures_in_a_row = serializers.IntegerField()
    disabled = serializers.BooleanField(help_text=(
        f"Failed {settings.MONITORS_CHANNEL_MAX_FAILURES} notifications in a row: not used until the channels are "
        "saved again."))


class MonitorSerializer(StrictSerializer, serializers.ModelSerializer):
    name = StrictCharField(max_length=200)
    kind = serializers.ChoiceField(choices=Monitor.Kind.choices, default=Monitor.Kind.THRESHOLD)
    metric = serializers.ChoiceField(choices=Monitor.Metric.choices, default=Monitor.Metric.ERROR_RATE, help_text=(
        "threshold and anomaly monitors watch it; drift monitors watch the intent distribution (ignored)."))
    intent = StrictCharField(max_length=200, required=False, allow_blank=True, default="", help_text=(
        "The intent whose share `intent_share` watches ('': runs that have no intent, i.e. failed); other metrics "
        "do not use it."))
    filters = FiltersField(required=False, default=dict)
    window_minutes = WindowMinutesField(default=15, help_text=(
        "5 to 10,080, a multiple of 5. Anomaly monitors compare with at most a week of past windows: beyond a day "
        "they have fewer than 6 and stay no_data."))
    comparator = serializers.ChoiceField(choices=Monitor.Comparator.choices, default=Monitor.Comparator.ABOVE)
    warn_threshold = StrictFloatField(required=False, allow_null=True, default=None, help_text=(
        "threshold: the metric's value; anomaly: the robust z-score (default 3); drift: the Jensen-Shannon distance "
        "(default 0.1). A threshold monitor with neither threshold only records its value."))
    alert_threshold = StrictFloatField(required=False, allow_null=True, default=None, help_text=(
        "As warn_threshold (anomaly default 5, drift 0.2); checked first."))
    min_runs = StrictIntegerField(min_value=1, max_value=1_000_000, default=20)
    renotify_minutes = StrictIntegerField(min_value=0, max_value=10_080, default=0)
    channels = ChannelsField(max_length=MAX_CHANNELS, required=False, default=list, help_text=(
        "apprise URLs: slack://..., mailto://..., json://..., signed://host/path (HMAC-signed JSON), log://. One "
        "that no notification plugin of the service can load is a 409."))
    enabled = StrictBooleanField(default=True)
    segment = serializers.ChoiceField(choices=Monitor.Segment.choices, required=False, allow_blank=True, default="",
                                      help_text="drift: compared per value of this dimension; other kinds ignore it.")
    reference_days = StrictIntegerField(min_value=1, max_value=30, default=7)
    reference_start = serializers.DateTimeField(required=False, allow_null=True, default=None, help_text=(
        "drift: a pinned reference period, used when both ends are given (an empty one leaves the monitor no_data)."))
    reference_end = serializers.DateTimeField(required=False, allow_null=True, default=None)
    drift_p_value = StrictFloatField(min_value=0.0, max_value=1.0, default=0.01)
    channels_status = serializers.SerializerMethodField()
    webhook_secret = serializers.SerializerMethodField(help_text=(
        "Signs signed:// webhooks; shown to users who may change monitors."))

    class Meta:
        model = Monitor
        fields = ["id", "name", "kind", "metric", "intent", "filters", "window_minutes", "comparator",
                  "warn_threshold", "alert_threshold", "min_runs", "renotify_minutes", "channels", "enabled",
                  "segment", "reference_days", "reference_start", "reference_end", "drift_p_value", "state",
                  "state_since", "last_value", "last_evaluated_at", "last_notified_at", "last_details",
                  "channels_status", "webhook_secret", "created_at", "updated_at"]
        read_only_fields = ["state", "state_since", "last_value", "last_evaluated_at", "last_notified_at",
                            "last_details", "created_at", "updated_at"]

    def _may_change(self) -> bool:
        request = self.context.get("request")
        return bool(request and request.user.has_perm("analytics.change_monitor"))

    @extend_schema_field(ChannelStatusSerializer(many=True))
    def get_channels_status(self, monitor: Monitor) -> list[dict]:
        failures = monitor.channel_failures or {}
        return [{"index": index, "channel": channel_shown(url), "failures_in_a_row": int(failures.get(str(index), 0)),
                 "disabled": index in (monitor.disabled_channels or [])} for index, url in enumerate(monitor.channels)]

    @extend_schema_field({"type": "string", "nullable": True})
    def get_webhook_secret(self, monitor: Monitor) -> str | None:
        return monitor.webhook_secret if self._may_change() else None

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not self._may_change():  # channel URLs hold tokens (Slack, PagerDuty): hidden from read-only staff
            data["channels"] = [status["channel"] for status in data["channels_status"]]
        return data

    def validate_channels(self, value: list[str]) -> list[str]:
        wrong = [url for url in value if not channel_valid(url)]
        if wrong:  # a service-side limit (which plugins are installed), not malformed input: 409
            raise ChannelUnknown({"channels": [
                f"No notification plugin of this service can load {channel_shown(url)} (see apprise's URLs)."
                for url in wrong]})
        return value


class PreviewInputSerializer(StrictSerializer):
    days = StrictIntegerField(min_value=1, max_value=MAX_DAYS, default=7)


class PreviewChangeSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    from_state = serializers.CharField(source="from")
    to_state = serializers.CharField(source="to")
    value = serializers.FloatField(allow_null=True)
    threshold = serializers.FloatField(allow_null=True)
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    details = serializers.DictField()


class PreviewSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    step_minutes = serializers.IntegerField(help_text="The monitor was evaluated every this many minutes.")
    evaluations = serializers.IntegerField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    changes = PreviewChangeSerializer(many=True, help_text="When it would have changed state, oldest first.")
    minutes_in_state = serializers.DictField(child=serializers.IntegerField())


class AlertSerializer(serializers.ModelSerializer):
    monitor_name = serializers.CharField(source="monitor.name")
    window_minutes = serializers.SerializerMethodField()

    class Meta:
        model = Alert
        fields = ["id", "monitor", "monitor_name", "kind", "from_state", "to_state", "value", "threshold",
                  "window_start", "window_end", "window_minutes", "created_at", "details", "delivery", "deliveries",
                  "attempts", "delivered_at"]

    def get_window_minutes(self, alert: Alert) -> int:
        return int((alert.window_end - alert.window_start).total_seconds() // 60)


class AlertFilterSerializer(StrictSerializer):
    monitor = StrictIntegerField(required=False, min_value=1, max_value=MAX_ID)
    state = serializers.ChoiceField(choices=Monitor.State.choices, required=False, help_text="The state entered.")

    def to_internal_value(self, data):
        # Query parameters arrive as text: the integer is parsed here, strictly.
        monitor = data.get("monitor")
        if isinstance(monitor, str):
            if not monitor.isdigit() or len(monitor) > 10:
                raise serializers.ValidationError({"monitor": ["A valid integer is required."]})
            data = data | {"monitor": int(monitor)}
        return super().to_internal_value(data)
