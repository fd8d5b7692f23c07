"""Prompt versions in MLflow's registries: one model version each, aliases, the served model answering as the
detector does, and an LM version's program and instructions (the LM itself is never called)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from intent import tracking
from intent.detectors import detector_get
from intent.program import DetectionInput, IntentDetector, LMSettings
from intent.program.signature import DetectIntent
from intent.tracking import registry
from tests.conftest import Process, child_env, free_port, wait_for

pytestmark = pytest.mark.django_db
API_KEY = "sk-test-never-stored-0123456789"


@pytest.fixture
def detector(mlflow_store, small_catalog) -> IntentDetector:
    return detector_get()


@pytest.fixture
def client(mlflow_store) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)


def stricter(detector: IntentDetector) -> IntentDetector:
    """The same fitted model at another out-of-scope threshold: another prompt version."""
    return IntentDetector(catalog=detector.catalog, local_model=detector.local.model.with_threshold(0.9))


def test_a_version_registered_twice_is_one_model_version_and_two_versions_are_two(detector, client):
    # given two prompt versions of the local backend
    other = stricter(detector)
    assert other.prompt_version != detector.prompt_version

    # when the first is registered twice, then the second
    first = registry.detector_version_register(detector=detector)
    again = registry.detector_version_register(detector=detector)
    second = registry.detector_version_register(detector=other)

    # then
    assert first == again == "1"
    assert second == "2"
    versions = client.search_model_versions(f"name = '{registry.REGISTERED_MODEL}'")
    assert sorted((str(v.version), v.tags["prompt_version"], v.tags["backend"]) for v in versions) == [
        ("1", detector.prompt_version, "local"), ("2", other.prompt_version, "local")]
    assert client.get_prompt(registry.INSTRUCTIONS_PROMPT) is None  # a local version has no LM instructions
    run = client.get_run(versions[0].run_id)  # the prompt version's run (contract C) holds the logged model
    assert run.data.tags["prompt_version"] == versions[0].tags["prompt_version"]
    [output] = run.outputs.model_outputs
    assert client.get_logged_model(output.model_id).artifact_location == versions[0].source


def test_aliases_point_at_prompt_versions(detector):
    # nothing registered yet
    assert registry.aliases_get() == {}
    assert registry.alias_set(alias="production", prompt_version=detector.prompt_version) is False
    registry.alias_delete(alias="production")

    # given two registered versions
    other = stricter(detector)
    registry.detector_version_register(detector=detector)
    registry.detector_version_register(detector=other)

    # when / then
    assert registry.alias_set(alias="production", prompt_version=detector.prompt_version) is True
    assert registry.alias_set(alias="candidate", prompt_version=other.prompt_version) is True
    assert registry.aliases_get() == {"production": detector.prompt_version, "candidate": other.prompt_version}
    assert registry.alias_set(alias="candidate", prompt_version="0123456789ab") is False  # never registered
    assert registry.alias_set(alias="production", prompt_version=other.prompt_version) is True  # promoted
    registry.alias_delete(alias="candidate")
    registry.alias_delete(alias="candidate")  # already gone: no error
    assert registry.aliases_get() == {"production": other.prompt_version}
    with pytest.raises(ValueError):
        registry.alias_set(alias="latest", prompt_version=other.prompt_version)


@pytest.mark.slow
def test_the_served_production_model_answers_what_the_detector_answers(detector, clinc150, tmp_path):
    # given the local version registered and aliased `production`
    registry.detector_version_register(detector=detector)
    registry.detector_version_register(detector=stricter(detector))  # another version, not served
    assert registry.alias_set(alias="production", prompt_version=detector.prompt_version)
    intents = set(detector.catalog.intent_names)
    messages = [text for text, intent in clinc150["test"] if intent in intents][::23][:16]
    messages += [text for text, _ in clinc150["oos_test"][:4]]
    modules = ["banking", "travel", "", "travel"] * 5  # the module breaks ties between templates
    rows = [[message, "agent" if i % 2 else "", module, "overview" if i % 3 else ""]
            for i, (message, module) in enumerate(zip(messages, modules, strict=True))]

    # when `mlflow models serve` runs it, from a folder without the repository (uvicorn puts its working directory
    # on sys.path: run from the repository, `intent` would import from there instead of the model's code)
    port = free_port()
    env = child_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)
    server = Process(["bash", "-c", 'cd "$0" && exec "$@"', str(tmp_path), sys.executable, "-m", "mlflow", "models",
                      "serve", "-m", f"models:/{registry.REGISTERED_MODEL}@production", "--host", "127.0.0.1",
                      "-p", str(port), "--env-manager", "local"], env=env, log_path=tmp_path / "serve.log")
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/ping", server), timeout=120, interval=0.5,
                 message="mlflow models serve to answer /ping")
        body = json.dumps({"dataframe_split": {"columns": ["message", "user_role", "current_module", "current_tab"],
                                               "data": rows}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            served = json.loads(response.read())["predictions"]
    finally:
        server.stop()

    # then, message by message
    expected = [detector.detect(DetectionInput(*row)) for row in rows]
    assert [p["intent"] for p in served] == [d.intent for d in expected]
    assert [(p["workflow_template"], p["agent_template"]) for p in served] == [
        (d.workflow_template, d.agent_template) for d in expected]
    assert [p["confidence"] for p in served] == pytest.approx([d.confidence for d in expected], abs=1e-9)
    assert {(p["status"], p["prompt_version"]) for p in served} == {("success", detector.prompt_version)}
    assert "out_of_scope" in {d.intent for d in expected} and len(set(d.intent for d in expected)) > 5


def answers(url: str, server: Process) -> bool:
    assert server.popen.poll() is None, server.log()
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_an_lm_version_registers_its_dspy_program_and_its_instructions(detector, client):
    # given an LM detector (its LM is never called here)
    lm_detector = IntentDetector(catalog=detector.catalog, local_model=detector.local.model, lm_settings=LMSettings(
        model="openai/test", api_base="http://127.0.0.1:9/v1", api_key=API_KEY))

    # when
    version = registry.detector_version_register(detector=lm_detector)

    # then: the model version, the DSPy flavour, the instructions in the Prompt Registry, all once
    assert registry.detector_version_register(detector=lm_detector) == version
    model_version = client.get_model_version(registry.REGISTERED_MODEL, version)
    assert model_version.tags["prompt_version"] == lm_detector.prompt_version
    assert model_version.tags["backend"] == "lm"
    prompts = client.search_model_versions(
        f"name = '{registry.INSTRUCTIONS_PROMPT}' AND tags.`mlflow.prompt.is_prompt` = 'true'")
    assert [p.tags["prompt_version"] for p in prompts] == [lm_detector.prompt_version]
    prompt = client.load_prompt(f"prompts:/{registry.INSTRUCTIONS_PROMPT}/{prompts[0].version}")
    assert prompt.template == DetectIntent.instructions
    model_dir = Path(model_version.source.removeprefix("file://"))  # a local store: its artifacts' folder
    assert "dspy" in (model_dir / "MLmodel").read_text()
    assert (model_dir / "code" / "intent" / "program" / "lm_detector.py").exists()
    assert not any(API_KEY.encode() in path.read_bytes() for path in model_dir.rglob("*") if path.is_file())


@pytest.mark.slow
def test_registering_through_an_mlflow_server(detector, mlflow_server, settings):
    # given the service pointed at an `mlflow server` (its registry answers over REST)
    settings.MLFLOW_TRACKING_URI = mlflow_server.uri
    tracking.experiment_cache_clear()

    # when / then
    assert registry.aliases_get() == {}
    registry.alias_delete(alias="candidate")
    version = registry.detector_version_register(detector=detector)
    assert registry.detector_version_register(detector=detector) == version == "1"
    assert registry.alias_set(alias="candidate", prompt_version=detector.prompt_version) is True
    assert registry.aliases_get() == {"candidate": detector.prompt_version}
    registry.alias_delete(alias="candidate")
    assert registry.aliases_get() == {}


def test_aliases_follow_activation_and_experiments(detector, settings, tmp_path, django_capture_on_commit_callbacks):
    from intent.experiments.services import experiment_start, experiment_stop
    from intent.models import Experiment
    from intent.services import prompt_version_activate, prompt_version_deactivate, prompt_version_register
    from intent.services.prompt_versions import local_prompt_version_create, prompt_registry_sync

    settings.INTENT_PROGRAM_DIR = tmp_path / "programs"
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the worker's follow-up runs here, as a worker would run it
    settings.TRACKING_FOLLOW_UP_TASKS = True
    prompt_version_register(detector=detector)
    strict = local_prompt_version_create(oos_threshold=0.9).version
    loose = local_prompt_version_create(oos_threshold=0.2).version

    # activation queues the sync: production moves to the activated version
    with django_capture_on_commit_callbacks(execute=True):
        prompt_version_activate(version=strict)
    assert registry.aliases_get() == {"production": strict}
    # an experiment's first variant is the candidate while it runs
    experiment = Experiment.objects.create(name="aliases", control=strict,
                                           variants=[{"name": "loose", "prompt_version": loose, "weight": 0.5}])
    with django_capture_on_commit_callbacks(execute=True):
        experiment_start(experiment=experiment)
    assert registry.aliases_get() == {"production": strict, "candidate": loose}
    with django_capture_on_commit_callbacks(execute=True):
        experiment_stop(experiment=experiment)
    assert registry.aliases_get() == {"production": strict}
    # back to the default program: production follows
    with django_capture_on_commit_callbacks(execute=True):
        prompt_version_deactivate()
    assert registry.aliases_get() == {"production": detector.prompt_version}
    assert prompt_registry_sync() == {"production": detector.prompt_version}  # idempotent
