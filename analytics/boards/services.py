"""Boards: which a user sees, each widget's answer (cached until the next sync, as reports are), exports, and the
default boards the service ships."""

from __future__ import annotations

import io
from datetime import date
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet

from ..mirror.triples import triples_request
from ..models import Board
from ..reports.scope import answer_cached, scope_get
from .widgets import WidgetSpec, widget_answer, widget_triples

DEFAULT_BOARDS: list[dict[str, Any]] = [
    {"name": "Support team: banking module", "description": "How the assistant does for banking customers.",
     "widgets": [
         {"title": "Detections", "metric": "runs", "filters": {"module": "banking"}, "days": 7, "chart": "number",
          "width": 3},
         {"title": "Out of scope", "metric": "out_of_scope_rate", "filters": {"module": "banking"}, "days": 7,
          "chart": "number", "width": 3},
         {"title": "Accuracy (labelled)", "metric": "accuracy", "filters": {"module": "banking"}, "days": 30,
          "chart": "number", "width": 3},
         {"title": "Fallbacks", "metric": "fallback_rate", "filters": {"module": "banking"}, "days": 7,
          "chart": "number", "width": 3},
         {"title": "Detections per day", "metric": "runs", "breakdown": "day", "filters": {"module": "banking"},
          "days": 30, "chart": "line", "width": 6},
         {"title": "Top intents", "metric": "runs", "breakdown": "intent", "filters": {"module": "banking"},
          "days": 7, "chart": "bar", "width": 6},
     ]},
    {"name": "Model owner: LM health", "description": "Errors, fallbacks, latency and cost per model.",
     "widgets": [
         {"title": "Error rate per model", "metric": "error_rate", "breakdown": "model_name", "days": 7,
          "chart": "bar", "width": 6},
         {"title": "Fallback rate per day", "metric": "fallback_rate", "breakdown": "day", "days": 30,
          "chart": "line", "width": 6},
         {"title": "p95 latency per prompt version", "metric": "latency_p95_ms", "breakdown": "prompt_version",
          "days": 30, "chart": "table", "width": 6},
         {"title": "Errors by category", "metric": "runs", "breakdown": "error_category", "days": 7,
          "chart": "bar", "width": 6},
         {"title": "Cost (USD)", "metric": "cost_usd", "breakdown": "day", "days": 30, "chart": "line", "width": 12},
     ]},
]
WIDGET_DEFAULTS = {"title": "", "breakdown": "", "filters": {}, "days": 30, "until": None, "chart": "number", "width": 6,
                   "height": 2}


def boards_visible(*, user) -> QuerySet:
    """The boards a staff user sees: their own, those shared with all staff or with one of their groups (every board
    for those who may change any)."""
    boards = Board.objects.select_related("owner", "group")
    if user.has_perm("analytics.change_board"):
        return boards
    return boards.filter(Q(owner=user) | Q(visibility=Board.Visibility.STAFF)
                         | Q(visibility=Board.Visibility.GROUP, group__in=user.groups.all())).distinct()


def widget_data(*, widget: dict[str, Any]) -> dict[str, Any]:
    """One widget's answer, from the cache while no sync has finished since it was computed."""
    until = widget.get("until")
    spec = WidgetSpec(metric=widget["metric"], breakdown=widget.get("breakdown", ""),
                      filters=widget.get("filters") or {}, days=widget.get("days", 30),
                      until=date.fromisoformat(until) if isinstance(until, str) else until)
    scope = scope_get(days=spec.days, until=spec.until, filters=spec.filters)
    return answer_cached(scope=scope, name=f"widget:{spec.metric}:{spec.breakdown}",
                         compute=lambda: widget_answer(spec=spec))


def boards_triples_request() -> list[str]:
    """Ask the sync for the triples of dimensions the saved widgets need (two filters and a breakdown by a third:
    `analytics.mirror.triples`), exactly those: call it after boards change. Returns them."""
    needed = set()
    for widgets in Board.objects.values_list("widgets", flat=True):
        for widget in widgets or []:
            if isinstance(widget, dict):
                needed |= widget_triples(filters=widget.get("filters") or {}, breakdown=widget.get("breakdown", ""))
    return triples_request(dimensions=needed)


def board_data(*, board: Board) -> list[dict[str, Any]]:
    return [{"index": index, "widget": widget, "data": widget_data(widget=widget)}
            for index, widget in enumerate(board.widgets)]


def board_export(*, board: Board, fmt: str, widget: int | None = None) -> bytes:
    """The board's widgets (or one) as one long table: widget, title, metric, breakdown, period, filters, key, value,
    runs; CSV (pandas) or Parquet (pyarrow)."""
    import json

    import pandas as pd

    columns = ["widget", "title", "metric", "breakdown", "since", "until", "filters", "key", "value", "runs"]
    records = []
    for entry in board_data(board=board):
        if widget is not None and entry["index"] != widget:
            continue
        data, spec = entry["data"], entry["widget"]
        head = {"widget": entry["index"], "title": spec.get("title", ""), "metric": data["metric"],
                "breakdown": data["breakdown"], "since": data["period"]["since"], "until": data["period"]["until"],
                "filters": json.dumps(data["filters"], sort_keys=True)}
        rows = data["rows"] or [{"key": "", **data["total"]}]
        records.extend(head | {"key": row["key"], "value": row["value"], "runs": row["runs"]} for row in rows)
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame["value"] = frame["value"].astype("float64")
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False, engine="pyarrow")
        return buffer.getvalue()
    return frame.to_csv(index=False).encode()


@transaction.atomic
def default_boards_create() -> int:
    """The service's default boards, shared with all staff, once each (by name). Returns how many were created."""
    created = 0
    for default in DEFAULT_BOARDS:
        widgets = [WIDGET_DEFAULTS | widget for widget in default["widgets"]]
        _, made = Board.objects.get_or_create(name=default["name"], owner=None, defaults={
            "description": default["description"], "visibility": Board.Visibility.STAFF, "widgets": widgets})
        created += made
    boards_triples_request()
    return created
