"""POST /api/intent/detect: answers, every kind of bad input, and authentication."""

from __future__ import annotations

import uuid

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from intent.models import IntentCategory

URL = "/api/intent/detect"
pytestmark = pytest.mark.django_db


def test_detects_a_catalog_intent_from_the_database(api_client, small_catalog):
    # given a catalog of 30 CLINC150 intents in the database
    # when
    response = api_client.post(
        URL,
        {"message": "please send 300 dollars from checking to my savings", "user_role": "customer",
         "current_module": "banking", "current_tab": "accounts"},
        format="json",
    )
    # then
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["intent"] == "transfer"
    assert body["category_source"] == "database"
    assert body["workflow_template"] == "money_transfer"
    assert body["requires_workflow"] is True
    assert body["agent_template"] is None
    assert body["fallback_used"] is False
    assert body["error_category"] is None
    assert body["model_name"] == "local/tfidf-linear"
    assert body["answered_by"] == "local/tfidf-linear"
    assert 0.0 < body["confidence"] <= 1.0
    assert len(body["prompt_version"]) == 12
    assert body["response_time_ms"] > 0
    uuid.UUID(body["request_id"])
    assert set(body) == {
        "request_id", "intent", "confidence", "requires_workflow", "workflow_template", "agent_template",
        "reasoning", "model_name", "answered_by", "prompt_version", "category_source", "fallback_used",
        "error_category", "response_time_ms", "experiment", "variant",
    }
    assert body["experiment"] is None and body["variant"] is None  # no experiment runs


def test_agent_template_selected_by_intent(api_client, small_catalog):
    response = api_client.post(URL, {"message": "do i need a visa to travel to china"}, format="json")
    assert response.status_code == 200
    assert response.json()["intent"] == "international_visa"
    assert response.json()["agent_template"] == "travel_concierge"


def test_unrelated_message_is_out_of_scope(api_client, small_catalog):
    response = api_client.post(URL, {"message": "what is the airspeed velocity of an unladen swallow"},
                               format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["intent"] == "out_of_scope"
    assert body["workflow_template"] is None and body["agent_template"] is None
    assert body["requires_workflow"] is False


def test_fallback_catalog_when_database_has_no_active_category(api_client, small_catalog):
    IntentCategory.objects.update(is_active=False)
    response = api_client.post(URL, {"message": "schedule a meeting with the team tomorrow"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["category_source"] == "fallback"
    assert body["intent"] == "schedule_meeting"
    assert body["workflow_template"] == "meeting_scheduler"


def test_fallback_catalog_on_an_empty_database(api_client):
    response = api_client.post(URL, {"message": "hello there"}, format="json")
    assert response.status_code == 200
    assert response.json()["category_source"] == "fallback"
    assert response.json()["intent"] == "greeting"


def test_catalog_change_is_picked_up_with_a_new_prompt_version(api_client, small_catalog):
    before = api_client.post(URL, {"message": "what is my balance"}, format="json").json()
    IntentCategory.objects.filter(name="balance").update(is_active=False)
    after = api_client.post(URL, {"message": "what is my balance"}, format="json").json()
    assert before["intent"] == "balance"
    assert after["intent"] != "balance"
    assert after["prompt_version"] != before["prompt_version"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "   "}, "message"),
        ({"message": "x" * 4001}, "message"),
        ({"message": None}, "message"),
        ({"message": ["a list"]}, "message"),
        ({"message": "hi", "user_role": "r" * 101}, "user_role"),
        ({"message": "hi", "current_module": "m" * 101}, "current_module"),
        ({"message": "hi", "current_tab": {"nested": 1}}, "current_tab"),
        ({"message": "hi", "mesage": "typo"}, "mesage"),
        # strings must be strings: DRF's CharField would turn these into text
        ({"message": 123}, "message"),
        ({"message": True}, "message"),
        ({"message": 1.5}, "message"),
        ({"message": "hi", "user_role": 5}, "user_role"),
        ({"message": "hi", "current_module": False}, "current_module"),
    ],
)
def test_invalid_input_is_a_400_naming_the_field(api_client, payload, field):
    response = api_client.post(URL, payload, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()


def test_null_for_an_optional_field_means_not_given(api_client, small_catalog):
    response = api_client.post(URL, {"message": "what is my balance", "user_role": None, "current_module": None,
                                      "current_tab": None}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["intent"] == "balance"


def test_too_many_detections_are_throttled_with_retry_after(api_client, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "detect", "5/min")
    codes = [api_client.post(URL, {"message": "hi"}, format="json").status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2
    response = api_client.post(URL, {"message": "hi"}, format="json")
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert "throttled" in response.json()["detail"].lower()


def test_message_of_exactly_4000_characters_is_accepted(api_client):
    response = api_client.post(URL, {"message": "hello " * 666 + "hell"}, format="json")
    assert response.status_code == 200


def test_body_that_is_not_an_object_is_a_400(api_client):
    response = api_client.post(URL, ["message"], format="json")
    assert response.status_code == 400
    assert "non_field_errors" in response.json()


def test_malformed_json_is_a_400(api_client):
    response = api_client.post(URL, data='{"message": "hi"', content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_non_json_content_type_is_a_415(api_client):
    response = api_client.post(URL, data="message=hi", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "Unsupported media type" in response.json()["detail"]


def test_oversized_body_is_a_413(api_client, settings):
    response = api_client.post(URL, {"message": "hi", "user_role": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE)},
                               format="json")
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_wrong_method_is_a_405(api_client, method):
    response = getattr(api_client, method)(URL)
    assert response.status_code == 405
    assert "not allowed" in response.json()["detail"]


def test_anonymous_gets_401(anonymous_client):
    response = anonymous_client.post(URL, {"message": "hi"}, format="json")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"


def test_bad_token_gets_401(anonymous_client):
    anonymous_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = anonymous_client.post(URL, {"message": "hi"}, format="json")
    assert response.status_code == 401
    assert "Invalid token" in response.json()["detail"]


def test_session_authentication_works(user):
    client = APIClient(enforce_csrf_checks=False)
    client.force_login(user)
    response = client.post(URL, {"message": "hi"}, format="json")
    assert response.status_code == 200


def test_drf_create_token_command_makes_a_working_token(user, capsys):
    call_command("drf_create_token", user.username)
    key = Token.objects.get(user=user).key
    assert key in capsys.readouterr().out
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.post(URL, {"message": "hi"}, format="json").status_code == 200


def test_openapi_schema_and_swagger_ui(anonymous_client):
    schema = anonymous_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    spec = schema.json()
    operation = spec["paths"]["/api/intent/detect"]["post"]
    assert operation["operationId"] == "intent_detect"
    assert "200" in operation["responses"]
    docs = anonymous_client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


def test_openapi_schema_has_no_warnings_and_distinct_components(tmp_path):
    """drf-spectacular warns (and merges them into one, wrong, component) when two serializers share a
    component name; `--fail-on-warn` turns any such warning into a failure."""
    from django.core.management import call_command

    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    for component in ("IntentDetectRequest:", "IntentDetection:", "IntentFeedbackRequest:", "IntentFeedbackRecorded:"):
        assert f"\n    {component}" in text
