"""Report answers are cached until the next sync finishes: between two syncs the mirror cannot change, so
the cache is exact; a finished sync (new version) is read at once; before any sync nothing is cached."""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from analytics.mirror.sync import runs_sync
from analytics.models import DailyRollup

pytestmark = pytest.mark.django_db
URL = "/api/analytics/mlflow/overview?days=1"


@pytest.fixture
def staff_client(django_user_model) -> APIClient:
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user(username="cache", is_staff=True))
    return client


def total_runs(client: APIClient) -> int:
    response = client.get(URL)
    assert response.status_code == 200, response.content
    return response.json()["total_runs"]


def test_answers_are_cached_until_the_next_sync_finishes(staff_client, run_logger, settings):
    now_ms = int(time.time() * 1000)
    run_logger.log(start_ms=now_ms - 60_000)
    runs_sync()
    assert total_runs(staff_client) == 1

    # Rollups changed behind the sync's back: the cached answer stands until a sync finishes.
    DailyRollup.objects.filter(dimension="all").update(runs=99)
    assert total_runs(staff_client) == 1
    DailyRollup.objects.filter(dimension="all").update(runs=1)  # (the next sync adds to the day's rollups)

    run_logger.log(start_ms=now_ms - 30_000)
    runs_sync()  # recomputes today's rollups and finishes: a new version
    assert total_runs(staff_client) == 2

    settings.ANALYTICS_CACHE_TIMEOUT_S = 0  # off: every request reads the rollups
    DailyRollup.objects.filter(dimension="all").update(runs=99)
    assert total_runs(staff_client) == 99


def test_nothing_is_cached_before_a_first_sync(staff_client, run_logger):
    assert total_runs(staff_client) == 0
    run_logger.log(start_ms=int(time.time() * 1000) - 60_000)
    runs_sync()
    assert total_runs(staff_client) == 1
