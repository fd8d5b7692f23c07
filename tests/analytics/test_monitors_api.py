"""The monitors and alerts API: who may read and write, the contract's validation, preview and the alert history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from analytics.models import Alert, Monitor

from .monitoring import mirror_ready, mirror_write, monitor, run_row

pytestmark = pytest.mark.django_db

MONITORS = "/api/analytics/monitors/"
ALERTS = "/api/analytics/alerts/"
VALID = {"name": "p95 banking", "kind": "threshold", "metric": "latency_p95_ms", "filters": {"module": "banking"},
         "window_minutes": 15, "comparator": "above", "warn_threshold": 800, "alert_threshold": 1500,
         "min_runs": 20, "renotify_minutes": 60, "channels": ["signed://127.0.0.1:9/hook", "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"],
         "enabled": True}


def client_for(django_user_model, name: str, *, staff: bool, change: bool = False) -> APIClient:
    user = django_user_model.objects.create_user(username=name, password=f"pw-{name}-12345", is_staff=staff)
    if change:
        user.user_permissions.add(Permission.objects.get(codename="change_monitor"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def editor(django_user_model) -> APIClient:
    return client_for(django_user_model, "editor", staff=True, change=True)


@pytest.fixture
def reader(django_user_model) -> APIClient:
    return client_for(django_user_model, "reader", staff=True)


def test_an_editor_creates_reads_changes_and_deletes_a_monitor(editor):
    created = editor.post(MONITORS, VALID, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert {k: body[k] for k in VALID} == VALID
    assert (body["state"], body["last_value"], body["last_evaluated_at"]) == ("ok", None, None)
    assert len(body["webhook_secret"]) == 64
    assert [c["disabled"] for c in body["channels_status"]] == [False, False]
    url = f"{MONITORS}{body['id']}/"
    assert editor.get(url).json()["name"] == "p95 banking"
    changed = editor.patch(url, {"alert_threshold": 2000, "state": "alert"}, format="json")
    assert changed.status_code == 200 and changed.json()["alert_threshold"] == 2000
    assert changed.json()["state"] == "ok"  # read-only: the evaluation's
    assert editor.delete(url).status_code == 204
    assert editor.get(url).status_code == 404


def test_staff_without_the_permission_read_without_secrets_and_cannot_write(editor, reader, django_user_model):
    monitor_id = editor.post(MONITORS, VALID, format="json").json()["id"]
    listed = reader.get(MONITORS)
    assert listed.status_code == 200
    [shown] = listed.json()["results"]
    assert shown["webhook_secret"] is None
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in str(shown["channels"]) and shown["channels"][0] == "signed://127.0.0.1:9/hook"
    assert reader.post(MONITORS, VALID | {"name": "other"}, format="json").status_code == 403
    assert reader.patch(f"{MONITORS}{monitor_id}/", {"enabled": False}, format="json").status_code == 403
    assert reader.delete(f"{MONITORS}{monitor_id}/").status_code == 403
    outsider = client_for(django_user_model, "outsider", staff=False, change=True)
    assert outsider.get(MONITORS).status_code == 403
    assert APIClient().get(MONITORS).status_code == 401
    assert APIClient().get(ALERTS).status_code == 401


@pytest.mark.parametrize(("change", "field"), [
    ({"window_minutes": 7}, "window_minutes"),
    ({"window_minutes": 10_085}, "window_minutes"),
    ({"window_minutes": "15"}, "window_minutes"),
    ({"filters": {"tab": "cards"}}, "filters"),
    ({"filters": {"module": 3}}, "filters"),
    ({"filters": ["banking"]}, "filters"),
    ({"warn_threshold": "high"}, "warn_threshold"),
    ({"channels": "slack://T1/B2/C3"}, "channels"),
    ({"channels": ["x" * 2001]}, "channels"),
    ({"metric": "latency_p99_ms"}, "metric"),
    ({"min_runs": 0}, "min_runs"),
    ({"enabled": "yes"}, "enabled"),
    ({"colour": "red"}, "colour"),
])
def test_invalid_monitors_are_refused_naming_the_field(editor, change, field):
    response = editor.post(MONITORS, VALID | change, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert all(isinstance(message, str) for message in response.json()[field])  # what the schema documents


def test_a_channel_no_plugin_can_load_is_a_conflict_naming_it_without_its_secrets(editor):
    response = editor.post(MONITORS, VALID | {"channels": ["log://", "nosuchservice://tok3n@host/path"]}, format="json")
    assert response.status_code == 409, response.content
    [message] = response.json()["channels"]
    assert "nosuchservice://" in message and "tok3n" not in message


def test_requests_the_routes_do_not_know_are_refused_plainly(editor, reader):
    assert reader.get(MONITORS, {"limit": "0"}).status_code == 400
    assert reader.get(MONITORS, {"offset": "-1"}).status_code == 400
    assert reader.get(f"{MONITORS}?offset=1&offset=2").status_code == 400
    assert reader.get(MONITORS, {"colour": "red"}).json() == {"colour": ["Unknown query parameter."]}
    assert reader.get(f"{ALERTS}?monitor=1&monitor=2").status_code == 400
    for path in (f"{MONITORS}null/", f"{MONITORS}1.5/", f"{MONITORS}{'9' * 30}/"):
        missing = reader.get(path)
        assert missing.status_code == 404 and missing["Content-Type"] == "application/json", path


@pytest.mark.parametrize("change", [
    {"warn_threshold": None, "alert_threshold": None},  # records its value, never fires
    {"warn_threshold": 2000, "alert_threshold": 1000},  # the alert is checked first
    {"metric": "intent_share", "intent": ""},  # the share of runs without an intent (failed)
    {"kind": "drift", "comparator": "below", "segment": "module"},  # drift fires above its distance
    {"reference_start": "2026-11-01T00:00:00Z"},  # a half-pinned reference: the rolling one
    {"kind": "anomaly", "window_minutes": 10_080},  # too little history: stays no_data
])
def test_combinations_that_have_a_meaning_are_accepted(editor, change):
    assert editor.post(MONITORS, VALID | change, format="json").status_code == 201

@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" + "0" * 400])
def test_thresholds_beyond_any_float_are_refused(editor, number):
    body = '{"name": "n", "metric": "error_rate", "alert_threshold": ' + number + '}'
    response = editor.post(MONITORS, body, content_type="application/json")
    assert response.status_code == 400 and "alert_threshold" in response.json(), response.content


def test_saving_the_channels_again_enables_disabled_ones(editor):
    monitor_id = editor.post(MONITORS, VALID, format="json").json()["id"]
    Monitor.objects.filter(pk=monitor_id).update(disabled_channels=[0], channel_failures={"0": 5})
    assert editor.get(f"{MONITORS}{monitor_id}/").json()["channels_status"][0]["disabled"] is True
    body = editor.patch(f"{MONITORS}{monitor_id}/", {"channels": ["log://"]}, format="json").json()
    assert body["channels_status"] == [{"index": 0, "channel": "log://", "failures_in_a_row": 0, "disabled": False}]


def test_preview_says_when_the_monitor_would_have_changed_state(editor, reader):
    now = timezone.now()
    mirror_ready()
    mirror_write([run_row(now - timedelta(minutes=m), error=m < 20) for m in range(0, 120)])
    created = editor.post(MONITORS, VALID | {"metric": "error_rate", "filters": {}, "warn_threshold": None,
                                              "alert_threshold": 0.5, "min_runs": 3}, format="json").json()
    response = reader.post(f"{MONITORS}{created['id']}/preview", {"days": 1}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["step_minutes"] == 5 and body["evaluations"] >= 288
    assert [(c["from_state"], c["to_state"]) for c in body["changes"]] == [("no_data", "ok"), ("ok", "alert")]
    assert reader.post(f"{MONITORS}{created['id']}/preview", {"days": 0}, format="json").status_code == 400
    assert reader.post(f"{MONITORS}{created['id']}/preview", {"days": "7"}, format="json").status_code == 400
    assert reader.post(f"{MONITORS}999999/preview", {"days": 1}, format="json").status_code == 404


def test_alert_history_is_filtered_by_monitor_and_state(editor, reader):
    first, second = monitor(name="a", alert_threshold=0.1), monitor(name="b", alert_threshold=0.1)
    now = timezone.now()
    for watched, to_state in ((first, "alert"), (first, "ok"), (second, "no_data")):
        Alert.objects.create(monitor=watched, from_state="ok", to_state=to_state, value=0.2, threshold=0.1,
                             window_start=now - timedelta(minutes=15), window_end=now, created_at=now)
    everything = reader.get(ALERTS).json()["results"]
    assert len(everything) == 3 and everything[0]["window_minutes"] == 15
    assert [a["to_state"] for a in reader.get(ALERTS, {"monitor": first.pk}).json()["results"]] == ["ok", "alert"]
    assert [a["monitor_name"] for a in reader.get(ALERTS, {"state": "no_data"}).json()["results"]] == ["b"]
    assert reader.get(ALERTS, {"monitor": "one"}).status_code == 400
    assert reader.get(ALERTS, {"state": "burning"}).status_code == 400


def test_the_schema_documents_the_monitor_routes(reader):
    schema = APIClient().get("/api/schema/?format=json")
    paths = schema.json()["paths"] if schema.status_code == 200 else {}
    for path in ("/api/analytics/monitors/", "/api/analytics/monitors/{id}/", "/api/analytics/monitors/{id}/preview",
                 "/api/analytics/alerts/"):
        assert path in paths, path


def test_the_default_monitors_are_valid_and_created_once(editor):
    from django.core.management import call_command

    from analytics.monitors.defaults import DEFAULT_MONITORS
    from analytics.monitors.serializers import MonitorSerializer

    for fields in DEFAULT_MONITORS:
        serializer = MonitorSerializer(data=fields | {"channels": ["log://"]})
        assert serializer.is_valid(), (fields["name"], serializer.errors)
    call_command("create_default_monitors")
    call_command("create_default_monitors")
    assert Monitor.objects.count() == len(DEFAULT_MONITORS)
    assert all(channels == ["log://"] for channels in Monitor.objects.values_list("channels", flat=True))


def test_a_taken_name_is_a_conflict(editor):
    first = editor.post(MONITORS, VALID, format="json").json()
    assert editor.post(MONITORS, VALID, format="json").json() == {"name": ["A monitor with this name exists."]}
    other = editor.post(MONITORS, VALID | {"name": "other"}, format="json").json()
    renamed = editor.patch(f"{MONITORS}{other['id']}/", {"name": first["name"]}, format="json")
    assert renamed.status_code == 409 and "name" in renamed.json()
