"""The LM backend end to end with no network: signature -> adapter -> dspy.LM -> HTTP -> parsed result,
against a small OpenAI-compatible server on 127.0.0.1, and the local fallback when the LM fails."""

from __future__ import annotations

import socket
import time

import pytest

from tests.llm_server import FakeLLMServer

URL = "/api/intent/detect"
pytestmark = pytest.mark.django_db


def answer(intent: str, **overrides):
    def behaviour(body):
        fields = {
            "intent": intent,
            "confidence": 0.87,
            "requires_workflow": True,
            "workflow_template": "money_transfer",
            "agent_template": "",
            "reasoning": "The user wants to move money between accounts.",
        }
        fields.update(overrides)
        return fields

    return behaviour


@pytest.fixture
def use_lm(settings):
    def configure(server: FakeLLMServer, *, timeout_s: float = 5, engine: str = "auto"):
        settings.INTENT_LM = "openai/fake-intent-model"
        settings.INTENT_LM_API_BASE = server.api_base
        settings.INTENT_LM_API_KEY = "sk-test-not-a-real-key"
        settings.INTENT_LM_TIMEOUT_S = timeout_s
        settings.INTENT_LM_ENGINE = engine

    return configure


@pytest.mark.parametrize("engine", ["auto", "litellm"])
def test_lm_answer_goes_through_the_whole_dspy_path(api_client, small_catalog, use_lm, engine):
    with FakeLLMServer(answer("transfer")) as server:
        use_lm(server, engine=engine)
        response = api_client.post(
            URL, {"message": "move 300 dollars into savings", "user_role": "customer", "current_module": "banking"},
            format="json",
        )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["intent"] == "transfer"
    assert body["confidence"] == pytest.approx(0.87)
    assert body["requires_workflow"] is True
    assert body["workflow_template"] == "money_transfer"
    assert body["agent_template"] is None
    assert body["reasoning"] == "The user wants to move money between accounts."
    assert body["model_name"] == "openai/fake-intent-model"
    assert body["fallback_used"] is False and body["error_category"] is None
    # the request the LM saw: the message, the context and the catalog from the database
    assert len(server.requests) == 1
    sent = server.requests[0]
    assert sent["path"].endswith("/chat/completions")
    headers = {name.lower(): value for name, value in sent["headers"].items()}
    assert headers["authorization"] == "Bearer sk-test-not-a-real-key"
    prompt = FakeLLMServer.user_text(sent["body"])
    assert "move 300 dollars into savings" in prompt
    assert "customer" in prompt
    assert "international_visa [travel]" in prompt
    assert "money_transfer [banking]" in prompt


def test_lm_prompt_version_differs_from_local(api_client, small_catalog, use_lm, settings):
    local = api_client.post(URL, {"message": "hi"}, format="json").json()
    with FakeLLMServer(answer("transfer")) as server:
        use_lm(server)
        remote = api_client.post(URL, {"message": "hi"}, format="json").json()
    assert local["prompt_version"] != remote["prompt_version"]


def test_answer_outside_the_catalog_becomes_out_of_scope(api_client, small_catalog, use_lm):
    with FakeLLMServer(answer("launch_rocket", workflow_template="not_a_template")) as server:
        use_lm(server)
        body = api_client.post(URL, {"message": "launch the rocket"}, format="json").json()
    assert body["intent"] == "out_of_scope"
    assert body["error_category"] == "invalid_output"
    assert body["workflow_template"] is None
    assert body["requires_workflow"] is False
    assert body["fallback_used"] is False


def test_lm_that_hangs_past_the_timeout_falls_back_to_local(api_client, small_catalog, use_lm):
    with FakeLLMServer("hang") as server:
        use_lm(server, timeout_s=1)
        started = time.monotonic()
        response = api_client.post(URL, {"message": "please send 300 dollars from checking to my savings"},
                                   format="json")
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    body = response.json()
    assert body["fallback_used"] is True
    assert body["error_category"] == "lm_timeout"
    assert body["intent"] == "transfer"  # the local backend's answer
    assert body["model_name"] == "openai/fake-intent-model"
    assert elapsed < 10


@pytest.mark.parametrize(
    ("behaviour", "category"),
    [(401, "lm_auth"), (429, "lm_rate_limit"), (503, "lm_unavailable"), ("garbage", "parse_error")],
)
def test_lm_failures_are_categorised_and_answered_locally(api_client, small_catalog, use_lm, behaviour, category):
    with FakeLLMServer(behaviour) as server:
        use_lm(server)
        response = api_client.post(URL, {"message": "what is my checking account balance"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["error_category"] == category
    assert body["fallback_used"] is True
    assert body["intent"] == "balance"


def test_lm_server_down_is_unavailable(api_client, small_catalog, settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.INTENT_LM = "openai/fake-intent-model"
    settings.INTENT_LM_API_BASE = f"http://127.0.0.1:{port}/v1"
    settings.INTENT_LM_API_KEY = "sk-test"
    settings.INTENT_LM_TIMEOUT_S = 2
    body = api_client.post(URL, {"message": "what is my checking account balance"}, format="json").json()
    assert body["fallback_used"] is True
    assert body["error_category"] == "lm_unavailable"
    assert body["intent"] == "balance"
