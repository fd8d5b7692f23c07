"""Custom boards: CRUD with owners, groups and staff-wide sharing; every widget's answer equal to the exact aggregate
of the raw mirrored rows over random metrics, breakdowns and filters; exports as CSV and Parquet; the default boards."""

from __future__ import annotations

import io
import math
import random

import pandas as pd
import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from analytics.boards.services import default_boards_create, widget_data
from analytics.boards.widgets import WidgetSpec, widget_answer
from analytics.mirror.sync import runs_sync
from analytics.mirror.triples import triples_request
from analytics.models import TRIPLES, MirroredRun
from analytics.reports import cells
from tests.analytics.conftest import DAY0_MS, DAY_MS, HOUR_MS
from tests.analytics.reference import nearest_rank

pytestmark = pytest.mark.django_db
URL = "/api/analytics/boards/"
WIDGET = {"title": "Runs", "metric": "runs", "breakdown": "day", "days": 3, "until": "2026-11-22", "chart": "line"}


def staff(django_user_model, name: str, *perms: str) -> APIClient:
    user = django_user_model.objects.create_user(username=name, password="pw", is_staff=True)
    for perm in perms:
        user.user_permissions.add(Permission.objects.get(codename=perm))
    client = APIClient()
    client.force_authenticate(user)
    client.user = user
    return client


def test_boards_are_private_shared_with_a_group_or_with_all_staff(django_user_model, api_client):
    ana, bob, admin = (staff(django_user_model, "ana"), staff(django_user_model, "bob"),
                       staff(django_user_model, "boss", "change_board"))
    team = Group.objects.create(name="support")
    ana.user.groups.add(team)
    created = ana.post(URL, {"name": "Mine", "widgets": [WIDGET]}, format="json")
    assert created.status_code == 201, created.content
    board = created.json()
    assert board["owner"] == "ana" and board["editable"] is True and board["widgets"][0]["width"] == 6
    assert bob.get(f"{URL}{board['id']}/").status_code == 404  # private: not even seen
    assert ana.patch(f"{URL}{board['id']}/", {"visibility": "group"}, format="json").status_code == 409  # which group?
    assert ana.patch(f"{URL}{board['id']}/", {"visibility": "group", "group": "nobody"}, format="json").status_code == 409
    shared = ana.patch(f"{URL}{board['id']}/", {"visibility": "group", "group": "support"}, format="json")
    assert shared.status_code == 200 and shared.json()["group"] == "support"
    assert bob.get(f"{URL}{board['id']}/").status_code == 404
    bob.user.groups.add(team)
    seen = bob.get(f"{URL}{board['id']}/")
    assert seen.status_code == 200 and seen.json()["editable"] is False
    assert bob.patch(f"{URL}{board['id']}/", {"name": "Ours"}, format="json").status_code == 403
    assert bob.delete(f"{URL}{board['id']}/").status_code == 403
    # reorder and resize: the widget list saved again
    widgets = [WIDGET | {"title": "second", "width": 12}, WIDGET | {"height": 4}]
    assert ana.patch(f"{URL}{board['id']}/", {"widgets": widgets}, format="json").json()["widgets"][0]["title"] == "second"
    assert admin.patch(f"{URL}{board['id']}/", {"name": "Renamed"}, format="json").status_code == 200
    assert api_client.get(URL).status_code == 403  # not staff
    assert APIClient().get(URL).status_code == 401
    bad = ana.post(URL, {"name": "x", "widgets": [WIDGET | {"metric": "nope"}]}, format="json")
    assert bad.status_code == 400 and all(isinstance(m, str) for m in bad.json()["widgets"])
    assert ana.delete(f"{URL}{board['id']}/").status_code == 204


def test_the_default_boards_are_created_once_and_seen_by_all_staff(django_user_model):
    assert default_boards_create() == 2 and default_boards_create() == 0
    names = {board["name"] for board in staff(django_user_model, "cat").get(URL).json()["results"]}
    assert names == {"Support team: banking module", "Model owner: LM health"}


def _reference(rows: list[dict], metric: str):
    if not rows:
        return 0 if metric == "runs" else None  # a count over no runs is 0; a rate or an average has no value
    latencies = [row["response_time_ms"] for row in rows if row["response_time_ms"] is not None]
    labelled = [row for row in rows if row["is_correct"] is not None]
    return {
        "runs": len(rows),
        "error_rate": sum(row["is_error"] for row in rows) / len(rows),
        "out_of_scope_rate": sum(row["detected_intent"] == "out_of_scope" for row in rows) / len(rows),
        "fallback_rate": sum(row["fallback_used"] is True for row in rows) / len(rows),
        "avg_confidence": sum(row["confidence_score"] for row in rows) / len(rows),
        "latency_p95_ms": nearest_rank(latencies, 0.95),
        "accuracy": sum(row["is_correct"] for row in labelled) / len(labelled) if labelled else None,
    }[metric]


BREAKDOWN_COLUMNS = {"intent": "detected_intent", "user_role": "user_role", "module": "current_module",
                     "tab": "current_tab", "model_name": "model_name", "prompt_version": "prompt_version",
                     "experiment": "experiment"}
FILTER_COLUMNS = {"module": "current_module", "user_role": "user_role", "tab": "current_tab",
                  "model_name": "model_name", "prompt_version": "prompt_version", "intent": "detected_intent",
                  "experiment": "experiment", "variant": "variant"}


@pytest.mark.parametrize("listed", [cells.PAIR_VALUES_LISTED, 0], ids=["pair values listed", "pair rows scanned"])
def test_every_widget_equals_the_exact_aggregate_of_the_raw_rows(run_logger, monkeypatch, listed):
    # A pair's rows under a filter are read by listing every value they can have (a seek each) or, where that list
    # would be long, by scanning the pair for the filter's part: both ways are held to the raw rows.
    monkeypatch.setattr(cells, "PAIR_VALUES_LISTED", listed)
    rng = random.Random(17)
    until = pd.Timestamp(DAY0_MS + 2 * DAY_MS, unit="ms").date()

    def path(breakdown: str, **filters: str) -> str:
        return widget_answer(spec=WidgetSpec(metric="runs", breakdown=breakdown, days=3, until=until,
                                             filters=filters))["path"]

    def log(count: int) -> None:
        for index in range(count):
            run_logger.log_random(rng, start_ms=DAY0_MS + rng.randrange(3 * DAY_MS) - (index % 2) * HOUR_MS,
                                  extra_tags={"experiment": "e1", "variant": rng.choice(["control", "b"])}
                                  if rng.random() < 0.3 else None)

    log(250)
    runs_sync()
    assert path("intent", module="banking", user_role="admin") == "raw rows"  # no triple asked for yet
    # Every triple asked for: the next sync builds them from the raw rows (after adding its new runs to the
    # rollups), the one after adds its runs to them (`rollups_add`).
    triples_request(dimensions=TRIPLES)
    log(100)
    runs_sync()
    log(50)
    runs_sync()
    rows = list(MirroredRun.objects.values())
    choices = {name: sorted({row[column] for row in rows} - {""}) for name, column in FILTER_COLUMNS.items()}
    metrics = ["runs", "error_rate", "out_of_scope_rate", "fallback_rate", "avg_confidence", "latency_p95_ms"]
    paths = []
    queries = CaptureQueriesContext(connection)
    with queries:
        _widgets_checked(rng, rows, choices, metrics, paths)
    # Which way the pairs were read: their values listed (a seek each) only when listing is on.
    listed_reads = [query for query in queries.captured_queries if " AND value IN (" in query["sql"]]
    assert bool(listed_reads) == (listed > 0)
    # Random widgets with two filters and a breakdown by a third read their triple's rows.
    triple_reads = {triple for query in queries.captured_queries for triple in TRIPLES if f"'{triple}'" in query["sql"]}
    assert len(triple_reads) >= 3, triple_reads
    assert {"rollups", "raw rows"} <= set(paths)  # both ways of reading were checked
    # The answer says how it was read: from the rollups (a dimension's rows, a pair's: a breakdown under one
    # filter, two filters and a breakdown by one of them; a triple's: two filters and a third dimension) or,
    # where no rollup fits, from the raw rows.
    assert path("intent") == "rollups"
    assert path("intent", module="banking") == "rollups"
    assert path("day", module="banking", user_role="admin") == "rollups"
    assert path("module", module="banking", intent="balance") == "rollups"
    assert path("intent", module="banking", user_role="admin") == "rollups"  # their triple
    assert path("variant", module="banking", user_role="admin") == "raw rows"  # no triple holds a compound
    assert path("", experiment="e1", variant="b") == "raw rows"  # arms are rolled up with their experiment only


def _widgets_checked(rng, rows, choices, metrics, paths: list[str]) -> None:
    """60 random widgets, each held equal to the aggregate of the raw rows; the path of each appended to `paths`."""
    for _ in range(60):
        filters = dict(rng.sample(sorted((name, rng.choice(values)) for name, values in choices.items()),
                                  rng.randint(0, 2)))
        metric = rng.choice(metrics)
        breakdown = rng.choice(["", "day", *BREAKDOWN_COLUMNS])
        answer = widget_answer(spec=WidgetSpec(metric=metric, breakdown=breakdown, filters=filters, days=3,
                                               until=pd.Timestamp(DAY0_MS + 2 * DAY_MS, unit="ms").date()))
        paths.append(answer["path"])
        matching = [row for row in rows if all(row[FILTER_COLUMNS[name]] == value for name, value in filters.items())
                    and answer["period"]["since"] <= row["day"].isoformat() <= answer["period"]["until"]]
        total = _reference(matching, metric)
        assert answer["total"]["runs"] == len(matching), (filters, breakdown, metric)
        _close(answer["total"]["value"], total, metric)
        if breakdown == "day":
            for row in answer["rows"]:
                _close(row["value"], _reference([r for r in matching if r["day"].isoformat() == row["key"]], metric),
                       metric)
        elif breakdown:
            column = BREAKDOWN_COLUMNS[breakdown]
            keys = {row["key"] for row in answer["rows"]}
            assert keys == {r[column] for r in matching} - ({""} - keys), (filters, breakdown)
            for row in answer["rows"]:
                _close(row["value"], _reference([r for r in matching if r[column] == row["key"]], metric), metric)

def _close(value, expected, metric: str) -> None:
    if expected is None or value is None:
        assert value == expected, metric
    elif metric == "latency_p95_ms":
        assert value == pytest.approx(expected, rel=0.011)  # the sketch: within 1 %
    else:
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-12), metric


def test_a_board_and_a_widget_export_as_csv_and_parquet(run_logger, django_user_model):
    rng = random.Random(3)
    for _ in range(60):
        run_logger.log_random(rng, start_ms=DAY0_MS + rng.randrange(3 * DAY_MS))
    runs_sync()
    ana = staff(django_user_model, "ana")
    widgets = [WIDGET, {"metric": "avg_confidence", "breakdown": "intent", "days": 3, "until": "2026-11-22",
                        "filters": {"module": "banking"}, "chart": "bar"}]
    board = ana.post(URL, {"name": "Export", "widgets": widgets}, format="json").json()
    data = ana.get(f"{URL}{board['id']}/data").json()
    assert [entry["data"]["rows"] for entry in data] == [widget_data(widget=w)["rows"] for w in board["widgets"]]
    csv = ana.get(f"{URL}{board['id']}/export", {"format": "csv"})
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    frame = pd.read_csv(io.StringIO(csv.content.decode()), keep_default_na=False)
    parquet = ana.get(f"{URL}{board['id']}/export", {"format": "parquet", "widget": 1})
    only = pd.read_parquet(io.BytesIO(parquet.content))
    expected = data[1]["data"]["rows"]
    assert list(only["key"]) == [row["key"] for row in expected]
    assert [None if math.isnan(v) else v for v in only["value"]] == pytest.approx(
        [row["value"] for row in expected], nan_ok=True)
    assert len(frame) == len(data[0]["data"]["rows"]) + len(expected)
    assert set(frame["widget"]) == {0, 1} and set(only["widget"]) == {1}
    assert ana.get(f"{URL}{board['id']}/export", {"widget": 5}).status_code == 404
    assert ana.get(f"{URL}{board['id']}/export", {"format": "xlsx"}).status_code == 400


def test_the_admin_checks_widgets_as_the_api_does(django_user_model):
    from django.test import Client

    from analytics.models import Board

    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser("root", password="pw-root-12345"))
    form = {"name": "by hand", "description": "", "owner": "", "visibility": "staff", "group": ""}
    refused = admin.post("/admin/analytics/board/add/", form | {"widgets": '[{"metric": "nonsense", "filters": [1]}]'})
    assert refused.status_code == 200 and not Board.objects.exists()  # the form again, with the API's messages
    assert "widget 0: metric" in refused.content.decode()
    saved = admin.post("/admin/analytics/board/add/", form | {"widgets": '[{"metric": "runs", "breakdown": "intent"}]'})
    assert saved.status_code == 302
    assert Board.objects.get().widgets == [{"title": "", "metric": "runs", "breakdown": "intent", "filters": {},
                                            "days": 30, "until": None, "chart": "number", "width": 6, "height": 2}]
