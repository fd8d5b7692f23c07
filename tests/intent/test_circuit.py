"""The LM's circuit breaker: its states on an injected clock and real threads, then end to end through
POST /api/intent/detect against a fake LM that hangs, recovers, or fails fast, with health and tracking."""

from __future__ import annotations

import math
import threading
import time

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from rest_framework.test import APIClient

from intent.models import DetectionRecord
from intent.program.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitConfig, circuit_get
from intent.services import detection_records_log
from tests.llm_server import FakeLLMServer

URL = "/api/intent/detect"
HEALTH_URL = "/api/analytics/mlflow/health"
MESSAGE = "what is my checking account balance"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **config) -> CircuitBreaker:
    return CircuitBreaker("test-lm", CircuitConfig(**config), clock=clock)


def fail(circuit: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        circuit.record(circuit.allow(), failed=True)


def succeed(circuit: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        circuit.record(circuit.allow(), failed=False)


# --- The breaker alone ----------------------------------------------------------------------------------


def test_it_opens_after_n_consecutive_failures_and_a_success_starts_the_count_again():
    clock = Clock()
    circuit = breaker(clock, failures_to_open=3, failure_rate_to_open=1.0, cooldown_s=30)

    fail(circuit, 2)
    succeed(circuit)
    fail(circuit, 2)
    still_closed = circuit.snapshot()
    fail(circuit)

    assert still_closed["state"] == CLOSED and still_closed["consecutive_failures"] == 2
    assert circuit.snapshot()["state"] == OPEN
    assert circuit.allow() is None
    clock.now += 29.9
    assert circuit.allow() is None  # still cooling down


def test_it_opens_when_the_failure_rate_over_the_window_exceeds_the_threshold():
    clock = Clock()
    circuit = breaker(clock, failures_to_open=100, failure_rate_to_open=0.5, window=10, min_calls=6)

    for _ in range(3):  # F S F S F S: 6 calls, a rate of exactly 0.5 does not exceed it
        fail(circuit)
        succeed(circuit)
    at_half = circuit.snapshot()
    fail(circuit)  # 4 of 7

    assert at_half["state"] == CLOSED and at_half["failure_rate"] == 0.5 and at_half["calls_in_window"] == 6
    assert circuit.snapshot()["state"] == OPEN
    assert circuit.snapshot()["consecutive_failures"] == 1


def test_the_rate_needs_min_calls_and_only_the_last_window_counts():
    clock = Clock()
    circuit = breaker(clock, failures_to_open=100, failure_rate_to_open=0.5, window=4, min_calls=4)

    fail(circuit, 2)  # 2 of 2 failed, but fewer than min_calls
    few = circuit.snapshot()["state"]
    succeed(circuit, 4)  # the failures leave the window
    fail(circuit, 2)  # 2 of the last 4

    assert few == CLOSED
    assert circuit.snapshot()["state"] == CLOSED and circuit.snapshot()["failure_rate"] == 0.5
    fail(circuit)  # 3 of the last 4
    assert circuit.snapshot()["state"] == OPEN


def test_half_open_lets_exactly_one_probe_through_while_other_threads_are_refused():
    clock = Clock()
    circuit = breaker(clock, failures_to_open=2, cooldown_s=10)
    fail(circuit, 2)
    clock.now += 10
    threads_n = 16
    barrier = threading.Barrier(threads_n)
    permits: list[int | None] = []
    permits_lock = threading.Lock()

    def caller() -> None:
        barrier.wait()
        permit = circuit.allow()
        with permits_lock:
            permits.append(permit)

    threads = [threading.Thread(target=caller) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)

    granted = [permit for permit in permits if permit is not None]
    assert len(permits) == threads_n and len(granted) == 1
    assert circuit.snapshot()["state"] == HALF_OPEN and circuit.snapshot()["probes"] == 1
    assert circuit.allow() is None  # the probe is still running: everyone else falls back
    circuit.record(granted[0], failed=False)
    assert circuit.snapshot()["state"] == CLOSED and circuit.snapshot()["opened_s_ago"] is None
    assert all(circuit.allow() is not None for _ in range(5))


def test_a_failed_probe_reopens_it_for_another_cooldown():
    clock = Clock()
    circuit = breaker(clock, failures_to_open=1, cooldown_s=10)
    fail(circuit)
    clock.now += 10

    probe = circuit.allow()
    circuit.record(probe, failed=True)

    assert probe is not None
    assert circuit.snapshot()["state"] == OPEN and circuit.snapshot()["times_opened"] == 2
    clock.now += 9.9
    assert circuit.allow() is None
    clock.now += 0.1
    assert circuit.allow() is not None  # the next probe


def test_a_call_let_through_before_it_opened_does_not_close_it():
    clock = Clock()
    circuit = breaker(clock, failures_to_open=2, cooldown_s=10)
    slow = circuit.allow()  # still on its way when the circuit opens
    fail(circuit, 2)
    clock.now += 10
    probe = circuit.allow()

    circuit.record(slow, failed=False)

    assert circuit.snapshot()["state"] == HALF_OPEN
    circuit.record(probe, failed=False)
    assert circuit.snapshot()["state"] == CLOSED


def test_a_probe_that_never_reports_frees_its_slot_only_after_probe_lost_s():
    clock = Clock()
    circuit = breaker(clock, failures_to_open=1, cooldown_s=10)
    fail(circuit)
    clock.now += 10
    lost = circuit.allow()  # its thread dies without recording

    clock.now += circuit.probe_lost_s - 0.1  # a slow probe is still a probe: nobody else goes
    refused = circuit.allow()
    clock.now += 0.1
    second = circuit.allow()

    assert lost is not None and refused is None and second is not None
    circuit.record(lost, failed=False)  # late: the slot is the second probe's now
    assert circuit.snapshot()["state"] == HALF_OPEN


def test_each_lm_has_one_breaker_in_the_process_shared_by_every_detector():
    config = CircuitConfig(failures_to_open=2)

    first = circuit_get(model="openai/a", api_base="http://127.0.0.1:1/v1", config=config)
    again = circuit_get(model="openai/a", api_base="http://127.0.0.1:1/v1", config=CircuitConfig(cooldown_s=1))
    other = circuit_get(model="openai/a", api_base="http://127.0.0.1:2/v1", config=config)

    assert first is again and first is not other
    assert first.config.cooldown_s == 1  # a changed config applies to the same breaker


# --- End to end ---------------------------------------------------------------------------------------


def answer(intent: str):
    return lambda body: {"intent": intent, "confidence": 0.9, "requires_workflow": False, "workflow_template": "",
                         "agent_template": "", "reasoning": "asks for the balance"}


@pytest.fixture
def use_lm(settings):
    def configure(server: FakeLLMServer, *, failures: int, timeout_s: float = 5, cooldown_s: float = 30):
        settings.INTENT_LM = "openai/fake-intent-model"
        settings.INTENT_LM_API_BASE = server.api_base
        settings.INTENT_LM_API_KEY = "sk-test-not-a-real-key"
        settings.INTENT_LM_TIMEOUT_S = timeout_s
        settings.INTENT_LM_BREAKER_FAILURES = failures
        settings.INTENT_LM_BREAKER_FAILURE_RATE = 0.5
        settings.INTENT_LM_BREAKER_WINDOW = 20
        settings.INTENT_LM_BREAKER_MIN_CALLS = 10
        settings.INTENT_LM_BREAKER_COOLDOWN_S = cooldown_s

    return configure


@pytest.fixture
def staff_client(django_user_model) -> APIClient:
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True))
    return client


def timed_detect(api_client) -> tuple[dict, float]:
    started = time.perf_counter()
    response = api_client.post(URL, {"message": MESSAGE}, format="json")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.content
    return response.json(), elapsed


def nearest_rank(values: list[float], quantile: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]


@pytest.mark.django_db
def test_a_hanging_lm_opens_the_breaker_answers_fast_and_closes_when_it_recovers(
    api_client, small_catalog, use_lm, staff_client, mlflow_store
):
    failures, timeout_s, cooldown_s = 3, 1.0, 4.0
    with FakeLLMServer("hang") as server:
        use_lm(server, failures=failures, timeout_s=timeout_s, cooldown_s=cooldown_s)

        # given: N detections that each wait for the timeout
        timed_out = [timed_detect(api_client) for _ in range(failures)]
        opened = time.monotonic()
        # when: the breaker is open
        skipped = [timed_detect(api_client) for _ in range(50)]
        health_open = staff_client.get(HEALTH_URL).json()
        calls_while_open = len(server.requests)

        # then the LM recovers; after the cool-down, the next detection is the probe
        server.behaviour = answer("balance")
        time.sleep(max(0.0, opened + cooldown_s + 0.1 - time.monotonic()))
        recovered = [timed_detect(api_client)[0] for _ in range(3)]
        health_closed = staff_client.get(HEALTH_URL).json()

    for body, elapsed in timed_out:
        assert body["error_category"] == "lm_timeout" and body["fallback_used"] is True
        assert elapsed >= timeout_s * 0.9
    bodies = [body for body, _ in skipped]
    assert {body["error_category"] for body in bodies} == {"lm_circuit_open"}
    assert all(body["fallback_used"] is True and body["intent"] == "balance" for body in bodies)
    # The detection itself (the detector's own clock, what `response_time_ms` reports): p99 under 50 ms. The whole
    # request (test client, outbox write, a database shared with the other test process) on a loaded 2-core machine
    # can stall once (a CI run saw one request of 0.71 s among 50), so the request's median is what is held to a
    # fraction of the LM's timeout; that no request waited for the LM is `calls_while_open` below.
    p99_ms = nearest_rank([body["response_time_ms"] for body in bodies], 0.99)
    request_p50_s = nearest_rank([elapsed for _, elapsed in skipped], 0.50)
    print(f"p99 of 50 detections with the breaker open: {p99_ms:.1f} ms (whole requests p50: {request_p50_s * 1000:.1f} ms)")
    assert p99_ms < 50
    assert request_p50_s < timeout_s / 4
    assert calls_while_open == failures  # no call reached the LM while open

    assert health_open["status"] == "degraded" and "lm_circuit_open" in health_open["reasons"]
    (circuit,) = health_open["lm_circuits"]
    assert circuit["lm"] == "openai/fake-intent-model" and circuit["api_base"] == server.api_base
    assert circuit["state"] == "open" and circuit["consecutive_failures"] == failures
    assert circuit["opened_at"] < circuit["open_until"]

    assert all(body["fallback_used"] is False and body["error_category"] is None for body in recovered)
    assert all(body["intent"] == "balance" for body in recovered)
    assert len(server.requests) == failures + 3  # the probe, then the closed breaker's calls
    assert "lm_circuit_open" not in health_closed["reasons"]
    (circuit,) = health_closed["lm_circuits"]
    assert circuit["state"] == "closed" and circuit["probes"] == 1 and circuit["times_opened"] == 1


@pytest.mark.django_db
def test_a_circuit_open_detection_is_recorded_and_tracked_as_lm_circuit_open(
    api_client, small_catalog, use_lm, mlflow_store
):
    with FakeLLMServer(503) as server:
        use_lm(server, failures=2)
        failed = [timed_detect(api_client)[0] for _ in range(2)]
        skipped, _ = timed_detect(api_client)

    detection_records_log(request_ids=[skipped["request_id"]])

    assert [body["error_category"] for body in failed] == ["lm_unavailable", "lm_unavailable"]
    assert skipped["error_category"] == "lm_circuit_open" and skipped["fallback_used"] is True
    payload = DetectionRecord.objects.get(request_id=skipped["request_id"]).payload
    assert payload["tags"]["error_category"] == "lm_circuit_open"
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("intent_detection")
    (run,) = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    assert run.info.status == "FAILED"
    assert run.data.tags["error_category"] == "lm_circuit_open"
    assert run.data.tags["error_type"] == "CircuitOpen"
    assert run.data.tags["status"] == "error" and run.data.tags["fallback_used"] == "true"
    assert run.data.tags["answered_by"] == "local/tfidf-linear"
    assert run.data.params["model_name"] == "openai/fake-intent-model"


@pytest.mark.django_db
def test_an_lm_answering_garbage_fast_does_not_open_the_breaker(api_client, small_catalog, use_lm):
    with FakeLLMServer("garbage") as server:
        use_lm(server, failures=2)
        bodies = [timed_detect(api_client)[0] for _ in range(4)]

    assert [body["error_category"] for body in bodies] == ["parse_error"] * 4
    assert len(server.requests) >= 4  # each detection asked the LM (DSPy may ask twice: chat, then JSON)


@pytest.mark.django_db
def test_zero_failures_disables_the_breaker(api_client, small_catalog, use_lm):
    with FakeLLMServer(503) as server:
        use_lm(server, failures=0)
        bodies = [timed_detect(api_client)[0] for _ in range(4)]

    assert [body["error_category"] for body in bodies] == ["lm_unavailable"] * 4
    assert len(server.requests) == 4
