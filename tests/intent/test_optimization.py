"""optimize_intents compiles the LM program with a DSPy optimizer against a fake OpenAI-compatible server (or
refits the local model), tracks the run in `intent_optimization` (contract C), saves a state that loads back
into a program that answers; activate_prompt_version makes it the program behind /api/intent/detect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dspy
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from mlflow.tracking import MlflowClient

from intent.detectors import detector_get
from intent.models import PromptVersion
from intent.program import LMIntentDetector
from intent.program.optimization import CatalogBoundDetector
from intent.services import prompt_version_register
from tests.llm_server import FakeLLMServer

pytestmark = pytest.mark.django_db
DETECT = "/api/intent/detect"
INTENTS = ("balance", "transfer", "international_visa", "exchange_rate")


@pytest.fixture
def labelled_set(tmp_path, clinc150) -> Path:
    """A CLINC150-format file: 2 training and 1 validation utterance per intent, plus 1 out-of-scope."""
    def first(split: str, n: int) -> list[list[str]]:
        return [pair for intent in INTENTS for pair in [p for p in clinc150[split] if p[1] == intent][:n]]

    path = tmp_path / "labelled.json"
    path.write_text(json.dumps({"train": first("train", 2), "val": first("val", 1),
                                "oos_val": clinc150["oos_val"][:1]}))
    return path


def field(text: str, name: str) -> str:
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?:\n\n\[\[ ## |\Z)", text, re.S)
    return match.group(1).strip() if match else ""


class Learner:
    """A fake LM that knows the training utterances and, once shown demos, every labelled one: before
    optimization it misses the validation set, after it gets it right."""

    def __init__(self, path: Path) -> None:
        data = json.loads(path.read_text())
        self.labels = {text: ("out_of_scope" if intent == "oos" else intent)
                       for split in data.values() for text, intent in split}
        self.train = {text for text, _ in data["train"]}

    def __call__(self, body: dict) -> dict:
        message = field(body["messages"][-1]["content"], "message")
        has_demos = any(m["role"] == "assistant" for m in body["messages"])
        known = message in self.train or has_demos
        return {"intent": self.labels.get(message, "out_of_scope") if known else "out_of_scope",
                "confidence": 0.9, "requires_workflow": False, "workflow_template": "", "agent_template": "",
                "reasoning": "demos helped" if has_demos else "no demos"}


@pytest.fixture
def use_lm(settings):
    def configure(server: FakeLLMServer):
        settings.INTENT_LM = "openai/fake-intent-model"
        settings.INTENT_LM_API_BASE = server.api_base
        settings.INTENT_LM_API_KEY = "sk-test"
        settings.INTENT_LM_TIMEOUT_S = 5

    return configure


@pytest.fixture
def program_dir(tmp_path, settings) -> Path:
    settings.INTENT_PROGRAM_DIR = tmp_path / "programs"
    return settings.INTENT_PROGRAM_DIR


def optimization_runs(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("intent_optimization")
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.parametrize(("optimizer", "params"), [
    ("bootstrap", {"optimizer.max_bootstrapped_demos": "4", "optimizer.max_labeled_demos": "4"}),
    ("labeled", {"optimizer.k": "4"}),
])
def test_optimizer_run_is_tracked_and_its_saved_state_answers(
    api_client, small_catalog, mlflow_store, program_dir, labelled_set, use_lm, optimizer, params, capsys, tmp_path
):
    learner = Learner(labelled_set)
    with FakeLLMServer(learner) as server:
        use_lm(server)
        base_version = detector_get().prompt_version
        call_command("optimize_intents", "--dataset", str(labelled_set), "--optimizer", optimizer)
        out = capsys.readouterr().out

        # the run: contract C's tags, the optimizer's params, scores before/after, the state as an artifact
        (run,) = optimization_runs(mlflow_store)
        tags, metrics = run.data.tags, run.data.metrics
        assert tags["optimizer"] == optimizer
        assert tags["base_prompt_version"] == base_version
        assert tags["model_name"] == "openai/fake-intent-model"
        new_version = tags["prompt_version"]
        assert new_version != base_version
        assert params.items() <= run.data.params.items()
        assert run.data.params["train_examples"] == "8" and run.data.params["val_examples"] == "5"
        assert metrics["score_before"] == pytest.approx(1 / 5)  # only the out-of-scope one, by default
        assert metrics["score_after"] == pytest.approx(1.0)
        assert metrics["in_scope_accuracy_after"] == pytest.approx(1.0)
        assert f"prompt_version={new_version}" in out
        # better on val: said so, tagged so, and activation suggested
        assert tags["improved"] == "true"
        assert "scored better on val: 100.00% (5 of 5 right) > 20.00% (1 of 5 right) (before)" in out
        assert f"activate with: python manage.py activate_prompt_version {new_version}" in out
        saved = program_dir / f"{new_version}.json"
        client = MlflowClient(mlflow_store)
        artifact = Path(client.download_artifacts(run.info.run_id, "program_state.json", str(tmp_path)))
        assert json.loads(artifact.read_text()) == json.loads(saved.read_text())
        demos = json.loads(saved.read_text())["detect"]["demos"]
        assert 0 < len(demos) <= 8
        assert all("intent_catalog" not in demo for demo in demos)  # the catalog is not repeated per demo

        # registered, not active yet
        version = PromptVersion.objects.get(version=new_version)
        assert version.base_version == base_version and not version.is_active
        assert Path(version.program_path) == saved.resolve()

        # the saved state loads back into a program that answers (with its demos in the prompt)
        program = LMIntentDetector()
        program.load(str(saved))
        catalog = detector_get().catalog
        message = next(text for text, intent in json.loads(labelled_set.read_text())["val"] if intent == "transfer")
        with dspy.context(lm=detector_get().lm, adapter=dspy.ChatAdapter()):
            assert CatalogBoundDetector(catalog, program)(message=message).intent == "transfer"


def test_activation_changes_the_reported_prompt_version(
    api_client, small_catalog, mlflow_store, program_dir, labelled_set, use_lm, capsys
):
    message = next(text for text, intent in json.loads(labelled_set.read_text())["val"] if intent == "transfer")
    with FakeLLMServer(Learner(labelled_set)) as server:
        use_lm(server)
        before = api_client.post(DETECT, {"message": message}, format="json").json()
        assert before["intent"] == "out_of_scope"  # the fake LM without demos does not know it
        call_command("optimize_intents", "--dataset", str(labelled_set), "--optimizer", "labeled")
        new_version = optimization_runs(mlflow_store)[0].data.tags["prompt_version"]
        assert api_client.post(DETECT, {"message": message}, format="json").json()["prompt_version"] == (
            before["prompt_version"])  # saved, not active

        call_command("activate_prompt_version", new_version)
        after = api_client.post(DETECT, {"message": message}, format="json").json()
        assert after["prompt_version"] == new_version
        assert after["intent"] == "transfer"  # the optimized program's demos are in the prompt now
        assert any(m["role"] == "assistant" for m in server.requests[-1]["body"]["messages"])
        assert PromptVersion.objects.get(is_active=True).version == new_version

        call_command("activate_prompt_version", "--default")
        assert api_client.post(DETECT, {"message": message}, format="json").json()["prompt_version"] == (
            before["prompt_version"])


class Forgetter(Learner):
    """A fake LM that knows every labelled utterance until it is shown demos, then answers out_of_scope."""

    def __call__(self, body: dict) -> dict:
        answer = super().__call__(body)
        has_demos = any(m["role"] == "assistant" for m in body["messages"])
        message = field(body["messages"][-1]["content"], "message")
        answer["intent"] = "out_of_scope" if has_demos else self.labels.get(message, "out_of_scope")
        return answer


class Steady(Learner):
    """A fake LM that knows every labelled utterance, demos or not."""

    def __call__(self, body: dict) -> dict:
        answer = super().__call__(body)
        answer["intent"] = self.labels.get(field(body["messages"][-1]["content"], "message"), "out_of_scope")
        return answer


@pytest.mark.parametrize(("behaviour", "verdict"), [
    (Forgetter, "The optimized program scored worse on val: 20.00% (1 of 5 right) < 100.00% (5 of 5 right) "
                "(before)."),
    (Steady, "The optimized program scored the same on val: 100.00% (5 of 5 right), as before; no gain."),
])
def test_no_better_program_is_saved_but_not_suggested_for_activation(
    small_catalog, mlflow_store, program_dir, labelled_set, use_lm, capsys, behaviour, verdict
):
    with FakeLLMServer(behaviour(labelled_set)) as server:
        use_lm(server)
        call_command("optimize_intents", "--dataset", str(labelled_set), "--optimizer", "labeled")
    out = capsys.readouterr().out
    (run,) = optimization_runs(mlflow_store)
    new_version = run.data.tags["prompt_version"]
    assert run.data.tags["improved"] == "false"
    assert run.data.metrics["score_after"] <= run.data.metrics["score_before"]
    assert (f"{verdict} Not suggesting activation; it is saved as prompt version {new_version} and can still "
            f"be activated by hand.") in out
    assert "activate with" not in out and "activate_prompt_version" not in out
    version = PromptVersion.objects.get(version=new_version)  # saved and registered all the same
    assert not version.is_active and Path(version.program_path).exists()


def test_limit_samples_each_split_by_intent(small_catalog, mlflow_store, program_dir, labelled_set, use_lm, capsys):
    with FakeLLMServer(Learner(labelled_set)) as server:
        use_lm(server)
        call_command("optimize_intents", "--dataset", str(labelled_set), "--optimizer", "labeled", "--limit", "4")
    out = capsys.readouterr().out
    assert "train sample: 4 of 8 examples, stratified by intent (4 strata, no out_of_scope in the set), seed 0" in out
    assert ("val sample: 4 of 5 examples, stratified by intent (5 strata incl. out_of_scope; 4 < 5, only 4 "
            "represented), seed 0") in out
    (run,) = optimization_runs(mlflow_store)
    assert run.data.params["train_examples"] == "4" and run.data.params["val_examples"] == "4"
    assert run.data.params["sample.limit"] == "4" and run.data.params["sample.seed"] == "0"
    # LabeledFewShot(k=4) keeps the 4 training examples: one per intent, not the first 4 rows (2 intents)
    demos = json.loads((program_dir / f"{run.data.tags['prompt_version']}.json").read_text())["detect"]["demos"]
    assert sorted(demo["intent"] for demo in demos) == sorted(INTENTS)


def test_local_backend_refits_and_rechooses_its_threshold(
    api_client, small_catalog, mlflow_store, program_dir, labelled_set, capsys
):
    base = api_client.post(DETECT, {"message": "what is my balance"}, format="json").json()
    call_command("optimize_intents", "--dataset", str(labelled_set))
    (run,) = optimization_runs(mlflow_store)
    new_version = run.data.tags["prompt_version"]
    assert run.data.tags["optimizer"] == "local-refit"
    assert run.data.tags["base_prompt_version"] == base["prompt_version"] != new_version
    assert run.data.tags["model_name"] == "local/tfidf-linear"
    assert run.data.params["optimizer.added_examples"] == "8"
    assert 0 <= float(run.data.params["optimizer.oos_threshold"]) <= 1
    assert {"score_before", "score_after"} <= set(run.data.metrics)
    improved = run.data.metrics["score_after"] > run.data.metrics["score_before"]
    assert run.data.tags["improved"] == str(improved).lower()
    assert (program_dir / f"{new_version}.joblib").exists()

    call_command("activate_prompt_version", new_version)
    after = api_client.post(DETECT, {"message": "what is my balance"}, format="json").json()
    assert after["prompt_version"] == new_version
    assert after["intent"] == "balance"


def test_errors_are_command_errors(small_catalog, mlflow_store, program_dir, tmp_path):
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"train": [["launch it", "launch_rocket"]], "val": [["hi", "balance"]]}))
    with pytest.raises(CommandError, match="launch_rocket"):
        call_command("optimize_intents", "--dataset", str(unknown))
    no_split = tmp_path / "set.csv"
    no_split.write_text("message,intent\nwhat is my balance,balance\n")
    with pytest.raises(CommandError, match="no split column"):
        call_command("optimize_intents", "--dataset", str(no_split))
    with pytest.raises(CommandError, match="No prompt version 'abc'"):
        call_command("activate_prompt_version", "abc")
    prompt_version_register(detector=detector_get())  # the default version, which has no saved program
    with pytest.raises(CommandError, match="no saved program"):
        call_command("activate_prompt_version", PromptVersion.objects.get().version)
    assert optimization_runs(mlflow_store) == []


def test_csv_with_a_split_column(small_catalog, mlflow_store, program_dir, tmp_path):
    path = tmp_path / "set.csv"
    path.write_text("message,intent,split\nhow much is in my checking,balance,train\n"
                    "move money to savings,transfer,train\nwhat is my balance,balance,val\n"
                    "tell me a joke about cats,oos,val\n")
    call_command("optimize_intents", "--dataset", str(path))
    (run,) = optimization_runs(mlflow_store)
    assert run.data.params["train_examples"] == "2" and run.data.params["val_examples"] == "2"


def output_fields(body: dict) -> list[str]:
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    section = system.split("Your output fields are:", 1)[-1].split("All interactions will be structured", 1)[0]
    return re.findall(r"^\d+\. `(\w+)`", section, re.M)


@pytest.mark.slow
def test_mipro_light_runs_against_the_fake_server(
    small_catalog, mlflow_store, program_dir, labelled_set, use_lm, tmp_path
):
    learner = Learner(labelled_set)

    def behaviour(body: dict) -> dict:
        fields = output_fields(body)
        if "intent" in fields:
            return learner(body)
        # MIPROv2's own proposer steps (dataset summary, program description, instruction proposals)
        return {name: "Classify the message into one catalog intent; answer out_of_scope otherwise."
                for name in fields}

    with FakeLLMServer(behaviour) as server:
        use_lm(server)
        call_command("optimize_intents", "--dataset", str(labelled_set), "--optimizer", "mipro")
    (run,) = optimization_runs(mlflow_store)
    assert run.data.tags["optimizer"] == "mipro"
    assert run.data.params["optimizer.auto"] == "light"
    assert run.data.metrics["score_before"] == pytest.approx(1 / 5)
    assert run.data.metrics["score_after"] == pytest.approx(1.0)
    state = json.loads((program_dir / f"{run.data.tags['prompt_version']}.json").read_text())
    assert state["detect"]["demos"]
