"""Prompt versions: registered when a detector first reports one, recorded in MLflow by a worker, activated."""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from intentsite.exceptions import Conflict

from .. import tracking
from ..models import PromptVersion

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
    return prompt_version


def prompt_version_deactivate() -> int:
    """Back to the default program (the signature as written, the catalog-fitted local model)."""
    return PromptVersion.objects.filter(is_active=True).update(is_active=False)
