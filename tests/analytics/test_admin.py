"""The admin shows the mirror read-only: lists with filters, search by request id / run id, date hierarchy."""

from __future__ import annotations

import pytest

from analytics.models import MirroredRun, SyncState
from analytics.services import runs_sync
from tests.analytics.conftest import DAY0_MS

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    return client


def test_mirrored_runs_are_listed_filtered_and_searched_but_not_editable(run_logger, admin_client_logged):
    transfer = run_logger.log(start_ms=DAY0_MS, intent="transfer", request_id="req-transfer-1")
    run_logger.log(start_ms=DAY0_MS + 1, intent="balance", request_id="req-balance-1")
    runs_sync()
    url = "/admin/analytics/mirroredrun/"

    listing = admin_client_logged.get(url)
    filtered = admin_client_logged.get(url, {"detected_intent": "transfer", "status": "FINISHED"})
    by_request = admin_client_logged.get(url, {"q": "req-transfer-1"})
    by_run = admin_client_logged.get(url, {"q": transfer})
    by_day = admin_client_logged.get(url, {"start_time__year": "2026", "start_time__month": "11"})

    assert listing.status_code == 200 and listing.content.count(b"/change/") == 2
    for response in (filtered, by_request, by_run):
        assert response.status_code == 200
        assert response.content.count(b"/change/") == 1 and transfer.encode() in response.content
    assert by_day.status_code == 200 and by_day.content.count(b"/change/") == 2
    row = MirroredRun.objects.get(run_id=transfer)
    assert admin_client_logged.get(f"{url}add/").status_code == 403
    detail = admin_client_logged.get(f"{url}{row.pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content  # view only
    assert admin_client_logged.post(f"{url}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert MirroredRun.objects.filter(pk=row.pk).exists()


def test_sync_state_and_rollups_are_shown(run_logger, admin_client_logged):
    run_logger.log(start_ms=DAY0_MS)
    runs_sync()
    state = SyncState.objects.get()

    states = admin_client_logged.get("/admin/analytics/syncstate/")
    detail = admin_client_logged.get(f"/admin/analytics/syncstate/{state.pk}/change/")
    rollups = admin_client_logged.get("/admin/analytics/dailyrollup/", {"dimension": "intent"})

    assert states.status_code == 200 and b"intent_detection" in states.content
    assert detail.status_code == 200 and b"lag" in detail.content
    assert rollups.status_code == 200 and b"balance" in rollups.content
