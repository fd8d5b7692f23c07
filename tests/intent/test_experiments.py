"""Live prompt experiments end to end with real parts: two real prompt versions (the local model at two out-of-scope
thresholds; LM programs on the OpenAI-compatible test server), the detect API, the MLflow store, the sync and its
rollups, and the results checked against a reference computed here from the raw answers with scipy."""

from __future__ import annotations

import hashlib
import itertools
import math
import uuid

import numpy as np
import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient
from scipy import stats as scipy_stats

from analytics.mirror.sync import runs_sync
from analytics.models import MirroredRun
from analytics.monitors.delivery import signature_verify
from intent.detectors import detector_get
from intent.experiments.assignment import experiment_assign, experiments_live_reset
from intent.experiments.evaluation import experiments_evaluate
from intent.experiments.notify import experiment_notify
from intent.models import Experiment
from intent.program import IntentDetector, LMIntentDetector
from intent.services import detection_feedback_log, detection_records_log, intent_detect
from intent.services.prompt_versions import local_prompt_version_create, prompt_version_saved_register
from tests.llm_server import FakeLLMServer

URL = "/api/intent/experiments/"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def assignment_reads_every_time(settings):
    settings.INTENT_EXPERIMENTS_REFRESH_S = 0
    experiments_live_reset()


@pytest.fixture
def manager(django_user_model) -> APIClient:
    user = django_user_model.objects.create_user(username="exp-owner", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_experiment"))
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def two_local_versions(small_catalog) -> tuple[str, str]:
    """The local model answering now, and the same fitted model with a strict out-of-scope threshold (0.9)."""
    control = detector_get()
    from intent.services import prompt_version_register

    prompt_version_register(detector=control)
    variant = local_prompt_version_create(oos_threshold=0.9)
    assert variant.version != control.prompt_version
    return control.prompt_version, variant.version


def started(manager: APIClient, **design) -> dict:
    response = manager.post(URL, design, format="json")
    assert response.status_code == 201, response.content
    experiment = response.json()
    response = manager.post(f"{URL}{experiment['id']}/start")
    assert response.status_code == 200, response.content
    return response.json()


def arm_of(name: str, unit: str, weights: list[float]) -> int:
    """The arm a unit must get, computed here from the documented rule: sha256(name, unit) in [0, 1)."""
    bucket = int.from_bytes(hashlib.sha256(f"{name}\x1f{unit}".encode()).digest()[:8], "big") / 2**64
    return next(index for index, upper in enumerate(itertools.accumulate(weights)) if bucket < upper)


def test_a_subject_always_gets_the_same_arm(api_client, manager, two_local_versions, clinc150):
    control, variant = two_local_versions
    started(manager, name="sticky", control=control, variants=[{"prompt_version": variant, "weight": 0.5}])
    messages = [text for text, _ in clinc150["test"][:100]]
    subjects = [f"user-{index}" for index in range(100)]
    seen = {}
    for attempt in range(2):
        if attempt:  # as after a restart: nothing cached in the process
            experiments_live_reset()
            from intent.detectors import detector_reset

            detector_reset()
        for subject, message in zip(subjects, messages, strict=True):
            body = api_client.post("/api/intent/detect", {"message": message, "subject_id": subject},
                                   format="json").json()
            assert body["experiment"] == "sticky"
            seen.setdefault(subject, set()).add((body["variant"], body["prompt_version"]))
    assert all(len(arms) == 1 for arms in seen.values())
    for subject, ((arm, version),) in seen.items():
        expected = ["control", "variant_1"][arm_of("sticky", subject, [0.5, 0.5])]
        assert arm == expected and version == {"control": control, "variant_1": variant}[arm]
    assert {arm for ((arm, _),) in seen.values()} == {"control", "variant_1"}
    # Only an HMAC of the subject is kept.
    detection_records_log(request_ids=[])
    from intent.models import DetectionRecord

    tags = DetectionRecord.objects.first().payload["tags"]
    assert len(tags["subject_hash"]) == 32 and not tags["subject_hash"].startswith("user-")
    assert not any("user-" in str(record.payload) for record in DetectionRecord.objects.all())


def test_the_split_is_within_binomial_tolerance(manager, two_local_versions, settings):
    control, variant = two_local_versions
    started(manager, name="split", control=control, assignment="request",
            variants=[{"prompt_version": variant, "weight": 0.3}])
    arms = [experiment_assign(request_id=uuid.uuid4()).ab.variant for _ in range(2000)]  # what each request gets
    on_variant = arms.count("variant_1")
    assert scipy_stats.binomtest(on_variant, 2000, 0.3).pvalue > 0.001, on_variant
    settings.INTENT_TRACKING_ENABLED = False  # and through the service the API calls: each arm answers as its version
    results = [intent_detect(message=f"what is my balance {index}") for index in range(200)]
    assert {result.detection.prompt_version for result in results if result.variant == "variant_1"} == {variant}
    assert {result.detection.prompt_version for result in results if result.variant == "control"} == {control}
    # Scope: a request of another module takes no part.
    Experiment.objects.filter(name="split").update(scope={"module": "banking"})
    experiments_live_reset()
    assert experiment_assign(request_id=uuid.uuid4(), current_module="travel").ab is None
    assert experiment_assign(request_id=uuid.uuid4(), current_module="banking").ab is not None


def test_a_second_ab_test_on_the_same_traffic_is_a_conflict(manager, two_local_versions):
    control, variant = two_local_versions
    started(manager, name="first", control=control, variants=[{"prompt_version": variant, "weight": 0.5}],
            scope={"module": "banking"})
    second = manager.post(URL, {"name": "second", "control": control, "variants": [
        {"prompt_version": variant, "weight": 0.5}]}, format="json").json()
    response = manager.post(f"{URL}{second['id']}/start")
    assert response.status_code == 409 and "first" in response.json()["detail"]
    # The control must be what answers now: a rollback sends the traffic back to it.
    upside_down = manager.post(URL, {"name": "upside-down", "control": variant, "scope": {"module": "travel"},
                                     "variants": [{"prompt_version": control, "weight": 0.5}]}, format="json").json()
    response = manager.post(f"{URL}{upside_down['id']}/start")
    assert response.status_code == 409 and control in response.json()["detail"]
    taken = manager.post(URL, {"name": "first", "control": control, "variants": [{"prompt_version": variant,
                                                                                 "weight": 0.5}]}, format="json")
    assert taken.status_code == 409 and taken.json()["name"] == ["An experiment with this name exists."]
    apart = manager.post(URL, {"name": "apart", "control": control, "scope": {"module": "travel"},
                               "variants": [{"prompt_version": variant, "weight": 0.5}]}, format="json").json()
    assert manager.post(f"{URL}{apart['id']}/start").status_code == 200


def test_bad_designs_are_clear_400s(manager, two_local_versions, api_client):
    control, variant = two_local_versions
    cases = [
        ({"variants": [{"prompt_version": variant, "weight": 1.0}]}, "variants", 409),
        ({"variants": [{"prompt_version": "feedbeef0000", "weight": 0.5}]}, "variants", 409),
        ({"variants": [{"prompt_version": variant, "weight": 0.3, "name": "b"}] * 2}, "variants", 409),
        ({"variants": [{"prompt_version": variant, "weight": 0.5, "name": "control"}]}, "variants", 400),
        ({"variants": [{"prompt_version": variant, "weight": 0}]}, "variants", 400),
        ({"variants": []}, "variants", 400),
        ({"guardrails": {"error_rate_max": 2}}, "guardrails", 400),
        ({"guardrails": {"p99": 1}}, "guardrails", 400),
        ({"name": "has space"}, "name", 400),
        ({"scope": {"tab": "x"}}, "scope", 400),
    ]
    for change, field, code in cases:
        design = {"name": "bad", "control": control, "variants": [{"prompt_version": variant, "weight": 0.5}]} | change
        response = manager.post(URL, design, format="json")
        assert response.status_code == code and field in response.json(), (change, response.content)
        errors = response.json()[field]
        assert isinstance(errors, list) and all(isinstance(message, str) for message in errors), errors
    # Staff without the permission read but do not write; a non-staff user does neither.
    staff = APIClient()
    from django.contrib.auth import get_user_model

    staff.force_authenticate(get_user_model().objects.create_user(username="reader", password="pw", is_staff=True))
    assert staff.get(URL).status_code == 200
    assert staff.post(URL, {"name": "x", "control": control, "variants": []}, format="json").status_code == 403
    assert api_client.get(URL).status_code == 403


def _wilson(successes: int, n: int, z: float = scipy_stats.norm.ppf(0.975)) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_results_equal_a_reference_computed_from_the_raw_answers(api_client, manager, two_local_versions, clinc150,
                                                                 mlflow_store, small_catalog):
    control, variant = two_local_versions
    experiment = started(manager, name="reference", control=control, assignment="request", primary_metric="accuracy",
                         variants=[{"prompt_version": variant, "weight": 0.5}], min_runs_per_variant=50,
                         guardrails={"error_rate_max": 0.5})
    intents = {intent["name"] for intent in small_catalog["intents"]}
    pool = [(text, intent) for text, intent in clinc150["test"] if intent in intents][:160]
    pool += [(text, "out_of_scope") for text, _ in clinc150["oos_test"][:40]]
    answers = []
    for index, (message, truth) in enumerate(pool):
        body = api_client.post("/api/intent/detect", {"message": message, "current_module": "banking"},
                               format="json").json()
        answers.append((body, truth, index % 3 != 0))  # two in three get a label
    detection_records_log(request_ids=[body["request_id"] for body, _, _ in answers])
    for body, truth, labelled in answers:
        if labelled:
            response = api_client.post("/api/intent/feedback", {"request_id": body["request_id"],
                                                                "correct_intent": truth}, format="json")
            assert response.status_code == 202, response.content
    detection_feedback_log(request_ids=[body["request_id"] for body, _, labelled in answers if labelled])
    runs_sync()
    assert MirroredRun.objects.filter(experiment="reference").count() == len(answers)

    results = manager.get(f"{URL}{experiment['id']}/results").json()
    arms = {arm["name"]: arm for arm in results["arms"]}
    raw = {name: [(body, truth, labelled) for body, truth, labelled in answers if body["variant"] == name]
           for name in ("control", "variant_1")}
    for name, rows in raw.items():
        arm = arms[name]
        confidences = np.array([body["confidence"] for body, _, _ in rows])
        labelled = [(body["intent"] == truth) for body, truth, is_labelled in rows if is_labelled]
        oos = sum(body["intent"] == "out_of_scope" for body, _, _ in rows)
        assert arm["runs"] == len(rows) and arm["labelled"] == len(labelled)
        accuracy = arm["metrics"]["accuracy"]
        assert accuracy["value"] == pytest.approx(sum(labelled) / len(labelled), abs=1e-12)
        assert (accuracy["low"], accuracy["high"]) == pytest.approx(_wilson(sum(labelled), len(labelled)), abs=1e-9)
        mean = arm["metrics"]["avg_confidence"]
        t = scipy_stats.t.ppf(0.975, len(confidences) - 1) * confidences.std(ddof=1) / math.sqrt(len(confidences))
        assert mean["value"] == pytest.approx(confidences.mean(), rel=1e-9)
        assert (mean["low"], mean["high"]) == pytest.approx((confidences.mean() - t, confidences.mean() + t), rel=1e-7)
        assert arm["metrics"]["out_of_scope_rate"]["value"] == pytest.approx(oos / len(rows), abs=1e-12)
    # The variant against control: a pooled two-proportion z-test on accuracy, Welch on confidence.
    right = {name: [body["intent"] == truth for body, truth, labelled in rows if labelled] for name, rows in raw.items()}
    x1, n1, x0, n0 = sum(right["variant_1"]), len(right["variant_1"]), sum(right["control"]), len(right["control"])
    pooled = (x1 + x0) / (n1 + n0)
    z = (x1 / n1 - x0 / n0) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    difference = arms["variant_1"]["difference"]["accuracy"]
    assert difference["diff"] == pytest.approx(x1 / n1 - x0 / n0, abs=1e-12)
    assert difference["p_value"] == pytest.approx(2 * scipy_stats.norm.sf(abs(z)), rel=1e-9)
    assert difference["provisional"] is False and results["horizon"]["reached"] is (min(n1, n0) >= 50)
    welch = scipy_stats.ttest_ind([b["confidence"] for b, _, _ in raw["variant_1"]],
                                  [b["confidence"] for b, _, _ in raw["control"]], equal_var=False)
    manager.patch(f"{URL}{experiment['id']}/", {"description": "confidence"}, format="json")
    Experiment.objects.filter(pk=experiment["id"]).update(primary_metric="avg_confidence")
    results = manager.get(f"{URL}{experiment['id']}/results").json()
    difference = {arm["name"]: arm for arm in results["arms"]}["variant_1"]["difference"]["avg_confidence"]
    assert difference["p_value"] == pytest.approx(welch.pvalue, rel=1e-7)
    # The stricter threshold answers out of scope more often (the versions really differ).
    assert arms["variant_1"]["metrics"]["out_of_scope_rate"]["value"] > arms["control"]["metrics"][
        "out_of_scope_rate"]["value"]
    # Every report takes the experiment and the arm as filters.
    overview = manager.get("/api/analytics/mlflow/overview", {"days": 1, "experiment": "reference",
                                                              "variant": "variant_1"}).json()
    assert overview["total_runs"] == len(raw["variant_1"])


def _marked_lm_version(settings, marker: str) -> str:
    """An LM program whose instructions carry `marker` (the test server fails some of its calls), saved and
    registered as a prompt version."""
    program = LMIntentDetector()
    program.detect.signature = program.detect.signature.with_instructions(
        program.detect.signature.instructions + f" {marker}")
    detector = detector_get()
    candidate = IntentDetector(catalog=detector.catalog, local_model=detector.local.model,
                               lm_settings=detector.lm_settings, program=program)
    path = settings.INTENT_PROGRAM_DIR / f"{candidate.prompt_version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), save_program=False)
    return prompt_version_saved_register(detector=candidate, path=path, base_version=detector.prompt_version).version


@pytest.fixture
def failing_variant_server(settings, tmp_path):
    """The test LM server: answers `balance` for the default program, and fails 3 of every 10 calls of the program
    whose instructions say FLAKY."""
    calls = itertools.count()

    def behaviour(body):
        if "FLAKY" in str(body) and next(calls) % 10 in (0, 3, 6):
            return 500
        return {"intent": "balance", "confidence": 0.9, "requires_workflow": False, "workflow_template": "",
                "agent_template": "", "reasoning": "asks for the balance"}

    with FakeLLMServer(behaviour) as server:
        settings.INTENT_LM = "openai/fake-intent-model"
        settings.INTENT_LM_API_BASE = server.api_base
        settings.INTENT_LM_API_KEY = "sk-test"
        settings.INTENT_LM_NUM_RETRIES = 0
        settings.INTENT_LM_BREAKER_FAILURES = 0  # no breaker: each call stands alone
        settings.INTENT_LM_BREAKER_FAILURE_RATE = 1.1
        settings.INTENT_PROGRAM_DIR = tmp_path / "programs"
        yield server


def test_a_variant_failing_30_percent_of_calls_is_rolled_back(api_client, manager, small_catalog, mlflow_store,
                                                              failing_variant_server, settings, receiver):
    from intent.services import prompt_version_register

    control = detector_get()
    prompt_version_register(detector=control)
    variant = _marked_lm_version(settings, "FLAKY")
    experiment = started(manager, name="flaky", control=control.prompt_version, assignment="request",
                         variants=[{"prompt_version": variant, "weight": 0.5}], min_runs_per_variant=1000,
                         guardrails={"fallback_rate_max": 0.1}, channels=[receiver.url()])
    bodies = [api_client.post("/api/intent/detect", {"message": f"what is my balance {index}"},
                              format="json").json() for index in range(100)]
    on_variant = [body for body in bodies if body["variant"] == "variant_1"]
    assert 30 <= len(on_variant) <= 70
    assert 0.2 <= sum(body["fallback_used"] for body in on_variant) / len(on_variant) <= 0.4
    assert not any(body["fallback_used"] for body in bodies if body["variant"] == "control")
    detection_records_log(request_ids=[body["request_id"] for body in bodies])
    runs_sync()

    outcome = experiments_evaluate(track=False)
    assert outcome.rolled_back == ["flaky"]
    rolled = Experiment.objects.get(pk=experiment["id"])
    assert rolled.status == "rolled_back" and "fallback_rate_max" in rolled.decision["reason"]
    (breach,) = rolled.decision["breaches"]
    assert breach["variant"] == "variant_1" and breach["low"] > 0.1
    # All traffic is back on control at once (refresh 0 here; INTENT_EXPERIMENTS_REFRESH_S in general).
    after = [api_client.post("/api/intent/detect", {"message": f"balance please {index}"},
                             format="json").json() for index in range(20)]
    assert all(body["experiment"] is None and body["prompt_version"] == control.prompt_version for body in after)
    # The channels hear of it, signed with the experiment's secret.
    assert experiment_notify(experiment_id=rolled.pk) == {receiver.url(): "sent"}
    (received,) = receiver.requests
    assert signature_verify(secret=rolled.webhook_secret, body=received.body,
                            header=received.headers["X-Intentsite-Signature"])
    assert received.json()["status"] == "rolled_back" and "flaky" in received.json()["text"]
    assert experiment_notify(experiment_id=rolled.pk) == {}  # told once
    # The experiment is a run in MLflow's intent_experiments, ended as KILLED with its numbers.
    from mlflow import MlflowClient

    from intent.experiments.evaluation import experiment_track

    run = MlflowClient(mlflow_store).get_run(experiment_track(experiment=rolled))
    assert run.info.status == "KILLED" and run.data.tags["status"] == "rolled_back"
    assert run.data.metrics["variant_1.fallback_rate"] == pytest.approx(breach["value"])
    assert run.data.params["primary_metric"] == "accuracy"
    assert MlflowClient(mlflow_store).get_experiment(run.info.experiment_id).name == "intent_experiments"


def test_shadow_changes_no_answer_and_reports_agreement(api_client, manager, two_local_versions, clinc150,
                                                        small_catalog, django_capture_on_commit_callbacks,
                                                        monkeypatch):
    from intent.experiments.shadow import shadow_detections_run
    from intent.models import ShadowDetection

    control, variant = two_local_versions
    intents = {intent["name"] for intent in small_catalog["intents"]}
    messages = [text for text, intent in clinc150["test"] if intent in intents][:60]
    before = [api_client.post("/api/intent/detect", {"message": m}, format="json").json() for m in messages]
    experiment = started(manager, name="shadowed", mode="shadow", control=control, assignment="request",
                         variants=[{"prompt_version": variant, "weight": 1.0}])
    from intent import dispatch

    submitted = []  # what the publisher's thread would send to a worker, kept here (records: sent nowhere)
    monkeypatch.setattr(dispatch.shadow_publisher, "submit", submitted.append)
    monkeypatch.setattr(dispatch.record_publisher, "submit", lambda request_id: None)
    with django_capture_on_commit_callbacks(execute=True):
        after = [api_client.post("/api/intent/detect", {"message": m}, format="json").json() for m in messages]
    keys = ("intent", "confidence", "prompt_version", "workflow_template", "agent_template")
    assert [[b[k] for k in keys] for b in after] == [[b[k] for k in keys] for b in before]
    assert all(body["experiment"] is None for body in after)
    assert len(submitted) == len(messages)
    assert shadow_detections_run(items=submitted) == len(messages)
    assert shadow_detections_run(items=submitted) == 0  # a redelivery finds its rows
    rows = list(ShadowDetection.objects.filter(experiment_id=experiment["id"]))
    strict = detector_get().local.model.with_threshold(0.9)
    for row in rows:
        assert row.prompt_version == variant
        assert row.intent == strict.predict(next(m for m, b in zip(messages, after, strict=True)
                                                 if b["request_id"] == str(row.request_id))).intent
    results = manager.get(f"{URL}{experiment['id']}/results").json()
    arms = {arm["name"]: arm for arm in results["arms"]}
    agree = sum(row.intent == row.live_intent for row in rows)
    assert arms["variant_1"]["metrics"]["agreement"]["value"] == pytest.approx(agree / len(rows))
    assert arms["control"]["runs"] == arms["variant_1"]["runs"] == len(messages)


def test_the_results_page_shows_the_arms_and_their_days(transactional_db, live_server, browser, django_user_model,
                                                       api_client, small_catalog, mlflow_store, clinc150):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser import WAIT_S, staff_session

    control = detector_get()
    from intent.services import prompt_version_register

    prompt_version_register(detector=control)
    variant = local_prompt_version_create(oos_threshold=0.9).version
    experiment = Experiment.objects.create(name="paged", control=control.prompt_version, assignment="request",
                                           variants=[{"name": "strict", "prompt_version": variant, "weight": 0.5}],
                                           primary_metric="out_of_scope_rate")
    from intent.experiments.services import experiment_start

    experiment_start(experiment=experiment)
    bodies = [api_client.post("/api/intent/detect", {"message": text}, format="json").json()
              for text, _ in clinc150["test"][:40]]
    detection_records_log(request_ids=[body["request_id"] for body in bodies])
    runs_sync()
    staff_session(live_server, browser, django_user_model, username="erin")
    browser.get(f"{live_server.url}/admin/intent/experiment/{experiment.pk}/results/")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.execute_script("return document.getElementById('experiment').dataset.state") == "ready")
    rows = {row.get_attribute("data-arm"): row.text for row in browser.find_elements(By.CSS_SELECTOR, "#experiment-arms tbody tr")}
    runs = {arm: sum(body["variant"] == arm for body in bodies) for arm in ("control", "strict")}
    assert set(rows) == {"control", "strict"}
    for arm, text in rows.items():
        assert f" {runs[arm]} " in f" {text} "
    drawn = browser.execute_script(
        "return window.experimentCharts.runs.data.datasets.map(d => [d.label, d.data.reduce((a, b) => a + b, 0)])")
    assert dict(drawn) == runs


def test_a_worker_runs_the_shadow_candidate_off_the_request_path(transactional_db, api_client, small_catalog,
                                                                  mlflow_store, start_worker, clinc150):
    from intent.models import ShadowDetection
    from tests.conftest import wait_for

    control = detector_get()
    from intent.services import prompt_version_register

    prompt_version_register(detector=control)
    candidate = local_prompt_version_create(oos_threshold=0.9).version
    experiment = Experiment.objects.create(name="shadow-live", mode="shadow", control=control.prompt_version,
                                           assignment="request", status="running",
                                           variants=[{"name": "strict", "prompt_version": candidate, "weight": 0.5}])
    start_worker(name="shadow")
    messages = [text for text, _ in clinc150["test"][:40]]
    bodies = [api_client.post("/api/intent/detect", {"message": m}, format="json").json() for m in messages]
    assert all(body["prompt_version"] == control.prompt_version for body in bodies)
    sampled = {body["request_id"] for body in bodies
               if arm_of("shadow-live", body["request_id"], [0.5, 0.5]) == 0}  # bucket below the weight: sampled
    wait_for(lambda: ShadowDetection.objects.filter(experiment=experiment).count() == len(sampled), timeout=60,
             message=f"{len(sampled)} shadow answers")
    rows = ShadowDetection.objects.filter(experiment=experiment)
    assert {str(row.request_id) for row in rows} == sampled
    live = {body["request_id"]: body for body in bodies}
    assert all(row.live_intent == live[str(row.request_id)]["intent"] and row.prompt_version == candidate
               for row in rows)
