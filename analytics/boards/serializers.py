"""Boards' input and output: a board and its widgets (each one metric × one breakdown × filters × period × chart)."""

from __future__ import annotations

from django.contrib.auth.models import Group
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import APIException

from intentsite.serializers import (
    NOT_BLANK,
    NestedListField,
    QueryChoiceField,
    QueryIntegerField,
    StrictCharField,
    StrictIntegerField,
    StrictNestedSerializer,
    StrictSerializer,
)

from ..models import Board
from ..monitors.serializers import KeyedDictField
from ..reports.scope import FILTERS
from ..reports.serializers import FILTER_MAX_LENGTHS, UNTIL_PATTERN, UntilField
from .widgets import BREAKDOWNS, CHARTS, METRICS

MAX_WIDGETS = 24


class GroupUnknown(APIException):
    """A group that does not exist, or one the user is not a member of."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "group_unknown"


@extend_schema_field({"type": "object", "additionalProperties": False, "properties": {
    name: {"type": "string", "minLength": 1, "maxLength": FILTER_MAX_LENGTHS[name], "pattern": NOT_BLANK}
    for name in FILTERS}})
class WidgetFiltersField(KeyedDictField):
    child = StrictCharField(max_length=200)
    keys = tuple(FILTERS)
    noun = "filter(s)"

    def checked(self, values: dict) -> dict:
        too_long = [name for name, value in values.items() if len(value) > FILTER_MAX_LENGTHS[name]]
        if too_long:
            raise serializers.ValidationError([f"{name}: at most {FILTER_MAX_LENGTHS[name]} characters."
                                               for name in too_long])
        return values


@extend_schema_field({"type": "string", "format": "date", "pattern": UNTIL_PATTERN, "nullable": True})
class WidgetUntilField(UntilField):
    """The reports' `until` (YYYY-MM-DD from 1970-01-01), in a widget: null means today."""


class WidgetSerializer(StrictNestedSerializer):
    title = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    metric = serializers.ChoiceField(choices=sorted(METRICS))
    breakdown = serializers.ChoiceField(choices=list(BREAKDOWNS), required=False, allow_blank=True, default="",
                                        help_text="'' for one number; `day` for a daily series; else a dimension.")
    filters = WidgetFiltersField(required=False, default=dict)
    days = StrictIntegerField(min_value=1, max_value=365, default=30)
    until = WidgetUntilField(allow_null=True, default=None, help_text=(
        "The period's last day (UTC), YYYY-MM-DD from 1970-01-01; null: today (the period moves with the days)."))
    chart = serializers.ChoiceField(choices=CHARTS, default="number")
    width = StrictIntegerField(min_value=1, max_value=12, default=6, help_text="Columns of 12.")
    height = StrictIntegerField(min_value=1, max_value=4, default=2, help_text="Rows.")

    def validate(self, attrs):
        if attrs.get("until") is not None:
            attrs["until"] = attrs["until"].isoformat()  # stored in a JSON column
        return super().validate(attrs)


class WidgetsField(NestedListField):
    child = WidgetSerializer()
    item = "widget"


class BoardSerializer(StrictSerializer, serializers.ModelSerializer):
    name = StrictCharField(max_length=200)
    description = StrictCharField(max_length=2000, required=False, allow_blank=True, default="")
    visibility = serializers.ChoiceField(choices=Board.Visibility.choices, default=Board.Visibility.PRIVATE)
    group = StrictCharField(max_length=150, required=False, allow_null=True, default=None, help_text=(
        "The group it is shared with (its name; visibility `group`): one of yours."))
    widgets = WidgetsField(max_length=MAX_WIDGETS, required=False, default=list, help_text=(
        "In display order; reorder or resize by saving the list again."))
    owner = serializers.SerializerMethodField()
    editable = serializers.SerializerMethodField()

    class Meta:
        model = Board
        fields = ["id", "name", "description", "visibility", "group", "widgets", "owner", "editable", "created_at",
                  "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    @extend_schema_field({"type": "string", "nullable": True})
    def get_owner(self, board: Board) -> str | None:
        return board.owner.get_username() if board.owner_id else None

    @extend_schema_field(serializers.BooleanField())
    def get_editable(self, board: Board) -> bool:
        request = self.context.get("request")
        return bool(request and board_editable(board=board, user=request.user))

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["group"] = instance.group.name if instance.group_id else None
        return data

    def validate_group(self, value: str | None) -> Group | None:
        if value is None:
            return None
        user = self.context["request"].user
        group = Group.objects.filter(name=value).first()
        if group is None or not (user.has_perm("analytics.change_board") or user.groups.filter(pk=group.pk).exists()):
            raise GroupUnknown({"group": [f"No group {value!r} of yours."]})
        return group

    def validate(self, attrs):
        visibility = attrs.get("visibility", self.instance.visibility if self.instance else Board.Visibility.PRIVATE)
        group = attrs["group"] if "group" in attrs else (self.instance.group if self.instance else None)
        if visibility == Board.Visibility.GROUP and group is None:
            raise GroupUnknown({"group": ["Visibility `group` needs the group's name."]})
        return super().validate(attrs)


def board_editable(*, board: Board, user) -> bool:
    return user.has_perm("analytics.change_board") or (board.owner_id is not None and board.owner_id == user.pk)


class ExportSerializer(StrictSerializer):
    format = QueryChoiceField(choices=["csv", "parquet"], help_text="csv (default) or parquet.")
    widget = QueryIntegerField(min_value=0, max_value=MAX_WIDGETS - 1, required=False,
                               help_text="Only this widget (its index); default every widget of the board.")
