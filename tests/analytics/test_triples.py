"""Rollups of three dimensions, kept where a saved widget needs them: the boards ask for them, the next sync builds
them from the raw rows (folded as the days' own rows), later syncs keep them exact as runs arrive, change or go, the
widgets read them (`path: rollups`), and they are dropped when no board needs them any more."""

from __future__ import annotations

import random
from datetime import date

import pytest

from analytics.boards.widgets import WidgetSpec, widget_answer
from analytics.mirror.sync import runs_sync
from analytics.mirror.triples import triples_request
from analytics.models import COMPOUND_SEPARATOR, DailyRollup, MirroredRun, RollupTriple, RollupTripleBuilt
from tests.analytics.test_rollups import assert_rollups_exact, log_days, log_spam

pytestmark = pytest.mark.django_db

ASKED = ["intent+role+module", "model+prompt_version+error_category"]


def _triple_rows(triple: str) -> int:
    return DailyRollup.objects.filter(dimension=triple).count()


def test_a_triple_asked_for_is_built_by_the_next_sync_kept_exact_and_dropped_when_no_longer_asked(run_logger):
    rng = random.Random(11)
    ids = log_days(run_logger, rng, days=3, per_day=40)
    runs_sync()
    assert not RollupTripleBuilt.objects.exists() and not DailyRollup.objects.filter(dimension__in=ASKED).exists()

    assert triples_request(dimensions=[*ASKED, "intent+nothing+module", "intent+role"]) == sorted(ASKED)
    assert sorted(RollupTriple.objects.values_list("dimension", flat=True)) == sorted(ASKED)
    runs_sync()  # nothing new in MLflow: the sync builds them from the raw rows
    built = {row.dimension: row for row in RollupTripleBuilt.objects.all()}
    assert set(built) == set(ASKED) and all(row.built_from is None for row in built.values())
    assert {triple: row.rows for triple, row in built.items()} == {triple: _triple_rows(triple) for triple in ASKED}
    assert all(_triple_rows(triple) > 0 for triple in ASKED)
    compared = assert_rollups_exact()  # every triple row equals the aggregate of its raw rows
    assert compared > sum(_triple_rows(triple) for triple in ASKED)

    # Runs arriving (added to the days' rollups), changed and deleted (the days recomputed): still exact.
    log_days(run_logger, rng, days=3, per_day=6)
    runs_sync()
    run_logger.client.set_tag(ids[0], "detected_intent", "relabelled")
    run_logger.client.delete_run(ids[1])
    runs_sync(full=True)
    assert DailyRollup.objects.filter(dimension="intent+role+module",
                                      value__startswith="relabelled" + COMPOUND_SEPARATOR).exists()
    assert assert_rollups_exact() > compared
    assert sum(DailyRollup.objects.filter(dimension=ASKED[0]).values_list("runs", flat=True)) == (
        MirroredRun.objects.count())

    triples_request(dimensions=ASKED[:1])  # no board needs the second any more: the next sync drops it
    runs_sync()
    assert list(RollupTripleBuilt.objects.values_list("dimension", flat=True)) == ASKED[:1]
    assert _triple_rows(ASKED[1]) == 0 and _triple_rows(ASKED[0]) > 0


def test_a_triple_folds_the_free_text_values_as_the_days_own_rows_do(run_logger, settings):
    """Built after the day's rollups (which kept its 5 most frequent modules, the rest as `other`), a triple holds
    per module value exactly the runs of that module's own row, the runs added later too."""
    settings.ANALYTICS_ROLLUP_TOP_VALUES = 5
    rng = random.Random(8)
    clock = log_spam(run_logger, rng, count=240)
    runs_sync()
    triples_request(dimensions=["intent+role+module"])
    runs_sync()
    assert assert_rollups_exact(top=5) > 0  # the reference folds each day's values beyond its top 5
    for index in range(20):  # added to the rollups: new values go to `other`, known ones to their row
        clock += 1000
        run_logger.log_random(rng, start_ms=clock, module="banking" if index % 2 else f"late-spam-{index}")
    runs_sync()
    for dimension, at in (("module", 2), ("role", 1)):
        own = dict(DailyRollup.objects.filter(dimension=dimension).values_list("value", "runs"))
        assert "other" in own
        in_triple: dict[str, int] = {}
        for value, runs in DailyRollup.objects.filter(dimension="intent+role+module").values_list("value", "runs"):
            part = value.split(COMPOUND_SEPARATOR)[at]
            in_triple[part] = in_triple.get(part, 0) + runs
        assert in_triple == own, dimension


def test_a_board_asks_for_the_triples_of_its_widgets_and_its_widgets_read_them_once_built(run_logger,
                                                                                          django_user_model):
    from rest_framework.test import APIClient

    log_days(run_logger, random.Random(4), days=2, per_day=50)
    runs_sync()
    client = APIClient()
    client.force_login(django_user_model.objects.create_user("ann", password="pw-ann-12345", is_staff=True))
    widget = {"metric": "latency_p95_ms", "breakdown": "intent", "filters": {"module": "banking", "user_role": "admin"},
              "days": 2, "until": "2026-11-21"}
    other = {"metric": "runs", "breakdown": "tab", "filters": {"model_name": "local/tfidf-linear", "variant": "b"}}
    created = client.post("/api/analytics/boards/", {"name": "mine", "widgets": [widget, other]}, format="json")
    assert created.status_code == 201, created.content
    assert list(RollupTriple.objects.values_list("dimension", flat=True)) == ["intent+role+module"]

    spec = WidgetSpec(metric="latency_p95_ms", breakdown="intent", filters=widget["filters"], days=2,
                      until=date(2026, 11, 21))
    before = widget_answer(spec=spec)
    assert before["path"] == "raw rows" and before["total"]["runs"] > 0
    runs_sync()
    after = widget_answer(spec=spec)
    assert after["path"] == "rollups"
    admin = APIClient()
    admin.force_login(django_user_model.objects.create_superuser("root", password="pw-root-12345"))
    listed = admin.get("/admin/analytics/rolluptriplebuilt/")
    assert listed.status_code == 200 and b"intent+role+module" in listed.content
    assert after["total"]["runs"] == before["total"]["runs"]
    assert {row["key"]: row["runs"] for row in after["rows"]} == {row["key"]: row["runs"] for row in before["rows"]}
    for mine, exact in zip(after["rows"], sorted(before["rows"], key=lambda row: (-row["runs"], row["key"])),
                           strict=True):
        assert mine["value"] == pytest.approx(exact["value"], rel=0.011)  # a sketch's percentile: within 1 %

    # A triple that does not cover the period (its days' raw rows were purged before it was asked for): raw rows.
    RollupTripleBuilt.objects.update(built_from=date(2026, 11, 21))
    assert widget_answer(spec=spec)["path"] == "raw rows"

    board = created.json()["id"]
    changed = client.patch(f"/api/analytics/boards/{board}/", {"widgets": [other]}, format="json")
    assert changed.status_code == 200 and not RollupTriple.objects.exists()
    client.patch(f"/api/analytics/boards/{board}/", {"widgets": [widget]}, format="json")
    assert RollupTriple.objects.count() == 1
    assert client.delete(f"/api/analytics/boards/{board}/").status_code == 204
    assert not RollupTriple.objects.exists()


def test_the_periodic_sync_task_asks_for_what_the_boards_need_however_they_changed(run_logger):
    """A board written without the boards' services (a shell, a data migration) or gone with its owner: the next
    periodic sync task lists the triples the boards need and the sync builds or drops them."""
    from analytics.models import Board
    from analytics.tasks import runs_sync_task

    log_days(run_logger, random.Random(2), days=2, per_day=20)
    board = Board.objects.create(name="made in a shell", widgets=[
        {"metric": "runs", "breakdown": "tab", "filters": {"intent": "balance", "prompt_version": "v1"}}])
    runs_sync_task.apply().get()
    assert list(RollupTripleBuilt.objects.values_list("dimension", flat=True)) == ["intent+tab+prompt_version"]
    assert _triple_rows("intent+tab+prompt_version") > 0
    board.delete()
    runs_sync_task.apply().get()
    assert not RollupTriple.objects.exists() and not RollupTripleBuilt.objects.exists()
    assert _triple_rows("intent+tab+prompt_version") == 0
