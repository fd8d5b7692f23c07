"""Prompt versions: registered when a detector first reports one, recorded in MLflow by a worker, activated."""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from intentsite.exceptions import Conflict

from .. import tracking
from ..models import PromptVersion
from ..outbox import REGISTRY_SYNC, task_send

if TYPE_CHECKING:
    from ..program import IntentDetector

logger = logging.getLogger(__name__)

# The detectors whose version is in the table already: a detector registers once, not once per request.
_registered: weakref.WeakSet[IntentDetector] = weakref.WeakSet()


class PromptVersionNotActivatable(Conflict):
    """No such prompt version, or it has no saved program to load."""


def prompt_version_register(*, detector: IntentDetector) -> None:
    """Keep what the detector's prompt version stands for, once per detector; a worker records it in MLflow
    (`prompt_versions_log`) with the next detections."""
    if detector in _registered:
        return
    PromptVersion.objects.get_or_create(
        version=detector.prompt_version,
        defaults={"model_name": detector.model_name, "description": detector.version_description},
    )
    _registered.add(detector)


def prompt_versions_log() -> int:
    """Record each prompt version not yet in MLflow (its full description as an artifact). Returns how many."""
    versions = list(PromptVersion.objects.filter(mlflow_run_id=""))
    for version in versions:
        prompt_version_log(version=version)
    return len(versions)


def prompt_version_log(*, version: PromptVersion) -> str:
    """Record one prompt version in MLflow (once: a version logged before is found, not logged again)."""
    run_id = tracking.prompt_version_log(version=version.version, model_name=version.model_name,
                                         description=version.description)
    PromptVersion.objects.filter(pk=version.pk).update(mlflow_run_id=run_id)
    version.mlflow_run_id = run_id
    return run_id


def prompt_version_saved_register(*, detector: IntentDetector, path: Path, base_version: str) -> PromptVersion:
    """Register a version whose program is saved at `path` (activatable, an experiment's arm), and record it in MLflow
    now if MLflow takes it (else a worker does with the next detections)."""
    version, _ = PromptVersion.objects.update_or_create(
        version=detector.prompt_version,
        defaults={"model_name": detector.model_name, "description": detector.version_description,
                  "program_path": str(Path(path).resolve()), "base_version": base_version},
    )
    if not version.mlflow_run_id:
        try:
            prompt_version_log(version=version)
        except Exception:  # noqa: BLE001 - a worker records it with the next detections
            logger.warning("Could not record prompt version %s in MLflow yet", version.version, exc_info=True)
    return version


def local_prompt_version_create(*, oos_threshold: float | None = None, temperature: float | None = None
                                ) -> PromptVersion:
    """A new local-model version: the fitted local model answering now with another out-of-scope threshold and/or
    softmax temperature, saved under INTENT_PROGRAM_DIR (a candidate for an experiment, or to activate)."""
    from ..detectors import detector_get
    from ..program import IntentDetector
    from ..program.files import write_atomically

    base = detector_get()
    if base.lm is not None:
        raise PromptVersionNotActivatable("An LM backend is configured: its versions come from optimize_intents")
    model = base.local.model
    if oos_threshold is not None:
        model = model.with_threshold(oos_threshold)
    if temperature is not None:
        model = model.with_temperature(temperature)
    detector = IntentDetector(catalog=base.catalog, local_model=model)
    path = Path(settings.INTENT_PROGRAM_DIR) / f"{detector.prompt_version}.joblib"
    write_atomically(path, model.save, suffix=".joblib")
    prompt_version_register(detector=base)
    return prompt_version_saved_register(detector=detector, path=path, base_version=base.prompt_version)


@transaction.atomic
def prompt_version_activate(*, version: str) -> PromptVersion:
    """Make this version's saved program the one every detector loads (within INTENT_CATALOG_REFRESH_S)."""
    prompt_version = PromptVersion.objects.select_for_update().filter(version=version).first()
    if prompt_version is None:
        raise PromptVersionNotActivatable(f"No prompt version {version!r}")
    if not prompt_version.program_path:
        raise PromptVersionNotActivatable(
            f"Prompt version {version} has no saved program (only optimize_intents saves one)")
    if not Path(prompt_version.program_path).exists():
        raise PromptVersionNotActivatable(f"Prompt version {version}: {prompt_version.program_path} is missing")
    PromptVersion.objects.filter(is_active=True).exclude(pk=prompt_version.pk).update(is_active=False)
    prompt_version.is_active, prompt_version.activated_at = True, timezone.now()
    prompt_version.save(update_fields=["is_active", "activated_at"])
    transaction.on_commit(_registry_sync_send, robust=True)
    return prompt_version


@transaction.atomic
def prompt_version_deactivate() -> int:
    """Back to the default program (the signature as written, the catalog-fitted local model)."""
    transaction.on_commit(_registry_sync_send, robust=True)
    return PromptVersion.objects.filter(is_active=True).update(is_active=False)


def prompt_registry_sync() -> dict[str, str]:
    """Make MLflow's registry match what answers: the versions in play registered as `intent-detector` versions,
    alias `production` on the version answering now (the active one, or the default program), `candidate` on the
    first variant of the running A/B experiment (removed when none runs). Returns {alias: prompt version}."""
    from ..detectors import VersionUnavailable, detector_for_version, detector_get
    from ..models import Experiment
    from ..tracking import registry

    production = detector_get(fresh=True)
    aliases = {"production": production}
    running = (Experiment.objects.filter(status=Experiment.Status.RUNNING, mode=Experiment.Mode.AB)
               .order_by("started_at").first())
    if running is not None and running.variants:
        try:
            aliases["candidate"] = detector_for_version(running.variants[0]["prompt_version"])
        except VersionUnavailable:
            logger.warning("Experiment %s's variant cannot be registered here", running.name, exc_info=True)
    for alias, detector in aliases.items():
        registry.detector_version_register(detector=detector)
        registry.alias_set(alias=alias, prompt_version=detector.prompt_version)
    if "candidate" not in aliases:
        registry.alias_delete(alias="candidate")
    return {alias: detector.prompt_version for alias, detector in aliases.items()}


def _registry_sync_send() -> None:
    """A worker moves the registry's `production` alias to the version now active (`intent.registry`)."""
    if not settings.TRACKING_FOLLOW_UP_TASKS:
        return
    try:
        task_send(name=REGISTRY_SYNC)
    except Exception:  # noqa: BLE001 - the next change, or `manage.py sync_prompt_registry`, moves it
        logger.warning("Could not queue the prompt registry's sync", exc_info=True)
