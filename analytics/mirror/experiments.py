"""Experiment maintenance: bring back the MLflow experiments intentsite writes to, or start them anew."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from intentsite import contract

from ..models import DailyRollup, MirroredRun, SyncState, WindowRollup
from . import store

logger = logging.getLogger(__name__)

def experiment_names() -> list[str]:
    """The experiments intentsite writes: detections (MLFLOW_EXPERIMENT_NAME), prompt versions, the offline
    evaluations and optimizations."""
    evaluation = getattr(settings, "ANALYTICS_EVALUATION_EXPERIMENT_NAME", contract.EVALUATION_EXPERIMENT)
    names = [settings.MLFLOW_EXPERIMENT_NAME, contract.PROMPT_VERSIONS_EXPERIMENT, evaluation,
             contract.OPTIMIZATION_EXPERIMENT, contract.PROMPT_EXPERIMENTS_EXPERIMENT]
    return list(dict.fromkeys(names))


@dataclass
class ExperimentsRecreateResult:
    created: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    orphaned_runs: int = 0
    # name -> the name the old experiment was put aside under (reset only)
    archived_as: dict[str, str] = field(default_factory=dict)
    # name -> the experiment's id now
    experiment_ids: dict[str, str] = field(default_factory=dict)
    mirrored_runs_dropped: int = 0

    def summary(self) -> str:
        def names(items: list[str]) -> str:
            return ", ".join(items) or "none"

        lines = [f"created: {names(self.created)}", f"restored: {names(self.restored)}",
                 f"reset: {names(self.reset)}", f"unchanged: {names(self.unchanged)}"]
        if self.reset:
            lines.append(f"orphaned runs: {self.orphaned_runs} (left in "
                         f"{', '.join(self.archived_as[name] for name in self.reset)}, deleted)")
            lines.append(f"mirrored runs dropped: {self.mirrored_runs_dropped}")
        return "\n".join(lines)


def _artifact_location(name: str) -> str | None:
    return contract.artifact_location(tracking_uri=settings.MLFLOW_TRACKING_URI,
                                      artifact_root=settings.MLFLOW_ARTIFACT_ROOT, experiment=name)


def mirror_forget(*, experiment_name: str, experiment_id: str) -> int:
    """Drop the mirror of an experiment id that is gone for good (a reset) and start its sync afresh.

    The sync reconciles one experiment id at a time, so the rows of the old id would otherwise stay
    behind, unseen. The lease is cleared too: a sync still running on the old id fails its next page
    (`SyncLeaseLost`) and rolls it back. Returns the mirrored runs dropped."""
    with transaction.atomic():
        dropped, _ = MirroredRun.objects.filter(experiment_id=experiment_id).delete()
        DailyRollup.objects.filter(experiment_id=experiment_id).delete()
        WindowRollup.objects.filter(experiment_id=experiment_id).delete()
        SyncState.objects.filter(experiment_name=experiment_name).update(
            experiment_id="", watermark_ms=None, newest_start_time=None, dirty_days=[], mirrored_runs=0,
            last_reconciled_at=None, lease_owner="", lease_until=None)
    return dropped


def experiments_recreate(*, reset: bool = False) -> ExperimentsRecreateResult:
    """Create the experiments MLflow lacks and restore the deleted ones (with their runs).

    With `reset`, each existing experiment (deleted or not) is put aside instead: renamed to
    `<name>.reset-<time>-<id>` and deleted, with its runs (the orphaned runs: those that were not deleted
    already); a new, empty experiment takes its name. The old one can still be restored by hand, or removed
    for good by `mlflow gc`. The mirror of a reset experiment is dropped and its sync starts afresh; a
    restored one is reconciled by the next sync (its runs come back).

    Processes that cached the old experiment id (web, workers) look the name up again within a minute
    (`intent.tracking.EXPERIMENT_RECHECK_S`) and write to the new experiment from then on."""
    result = ExperimentsRecreateResult()
    for name in experiment_names():
        found = store.experiment_get(name=name)
        if found is None:
            experiment_id = store.experiment_create(name=name, artifact_location=_artifact_location(name))
            result.created.append(name)
        elif reset:
            active = found.lifecycle == contract.LIFECYCLE_ACTIVE
            orphaned = store.experiment_active_runs_count(experiment_id=found.experiment_id) if active else 0
            if not active:  # MLflow renames active experiments only
                store.experiment_restore(experiment_id=found.experiment_id)
            archived = store.experiment_archive_name(name=name, experiment_id=found.experiment_id)
            store.experiment_rename(experiment_id=found.experiment_id, new_name=archived)
            store.experiment_delete(experiment_id=found.experiment_id)
            experiment_id = store.experiment_create(name=name, artifact_location=_artifact_location(name))
            dropped = mirror_forget(experiment_name=name, experiment_id=found.experiment_id)
            result.orphaned_runs += orphaned
            result.mirrored_runs_dropped += dropped
            result.reset.append(name)
            result.archived_as[name] = archived
            logger.warning("Experiment %r reset: old id %s is now %r (deleted, %d runs orphaned), new id %s",
                           name, found.experiment_id, archived, orphaned, experiment_id)
        elif found.lifecycle != contract.LIFECYCLE_ACTIVE:
            experiment_id = found.experiment_id
            store.experiment_restore(experiment_id=experiment_id)
            # Its runs are active again: the next sync reconciles the whole run-id set to take them back.
            SyncState.objects.filter(experiment_name=name).update(last_reconciled_at=None)
            result.restored.append(name)
        else:
            experiment_id = found.experiment_id
            result.unchanged.append(name)
        result.experiment_ids[name] = experiment_id
    return result
