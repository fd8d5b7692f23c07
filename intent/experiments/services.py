"""An experiment's life: created as a draft, started (its arms checked, no overlapping A/B test), stopped, promoted
(its winner becomes the active prompt version) or rolled back (a guardrail breached: all traffic to control).

Every change reaches the processes' assignment within INTENT_EXPERIMENTS_REFRESH_S. MLflow follows through a worker
once the change is committed (`EXPERIMENT_TRACK`): the experiment's run in `intent_experiments`, and the registry's
aliases (`production` on the active version, `candidate` on a running experiment's variant).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from intentsite.exceptions import Conflict

from ..detectors import VersionUnavailable, detector_for_version, detector_get
from ..models import Experiment, PromptVersion
from ..outbox import EXPERIMENT_NOTIFY, EXPERIMENT_TRACK, REGISTRY_SYNC, task_send  # noqa: F401 - re-exported
from ..services.prompt_versions import prompt_version_activate
from .assignment import experiments_live_reset

logger = logging.getLogger(__name__)

Status = Experiment.Status


class ExperimentConflict(Conflict):
    """The experiment cannot do that in its state, or would overlap a running one."""


def after_commit_send(name: str, *args: Any) -> None:
    """Queue the task `name` once the transaction commits (by name: the tasks module imports this one)."""
    if not settings.TRACKING_FOLLOW_UP_TASKS:
        return
    def send() -> None:
        try:
            task_send(name=name, args=list(args))
        except Exception:  # noqa: BLE001 - beat's evaluation tracks running experiments again every minute
            logger.warning("Could not queue %s%s", name, args, exc_info=True)

    transaction.on_commit(send, robust=True)


def _scopes_overlap(one: dict, other: dict) -> bool:
    """Can one request be in both scopes? Only not when both name a different value of the same key."""
    return all(one[key] == other[key] for key in one.keys() & other.keys())


@transaction.atomic
def experiment_create(*, created_by=None, **fields: Any) -> Experiment:
    return Experiment.objects.create(created_by=created_by, **fields)


@transaction.atomic
def experiment_update(*, experiment: Experiment, **fields: Any) -> Experiment:
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    changing = {name for name, value in fields.items() if getattr(experiment, name) != value} - {
        "description", "channels", "name"}
    if experiment.status != Status.DRAFT and changing:
        raise ExperimentConflict(f"Experiment {experiment.name} is {experiment.status}: only a draft's design changes "
                                 f"({', '.join(sorted(changing))} asked)")
    for name, value in fields.items():
        setattr(experiment, name, value)
    experiment.save()
    return experiment


def arms_check(*, experiment: Experiment) -> None:
    """Every arm can answer here (its saved program loads, fits the catalog and backend): else a 409 saying which."""
    for arm in experiment.arms():
        try:
            detector_for_version(arm["prompt_version"])
        except VersionUnavailable as error:
            raise ExperimentConflict(f"Arm {arm['name']} cannot answer: {error}") from error


@transaction.atomic
def experiment_start(*, experiment: Experiment) -> Experiment:
    """Start a draft: its control must be the version answering now (where a stop or rollback sends the traffic), its
    arms must answer here, and an A/B test must not share traffic with a running one."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != Status.DRAFT:
        raise ExperimentConflict(f"Experiment {experiment.name} is {experiment.status}; only a draft starts")
    answering = detector_get(fresh=True).prompt_version
    if experiment.control != answering:  # a rollback or a stop sends the traffic back to it: it must be what answers
        raise ExperimentConflict(f"The control must be the prompt version answering now ({answering}), not "
                                 f"{experiment.control}: activate it first (activate_prompt_version)")
    arms_check(experiment=experiment)
    if experiment.mode == Experiment.Mode.AB:
        # Serialised by locking the running A/B tests (a second start waits for the first one's commit).
        running = Experiment.objects.select_for_update().filter(status=Status.RUNNING, mode=Experiment.Mode.AB)
        for other in running:
            if _scopes_overlap(experiment.scope or {}, other.scope or {}):
                raise ExperimentConflict(
                    f"A/B experiment {other.name} is running on overlapping traffic (scope {other.scope or 'all'}); "
                    "stop it first or give this one a scope apart")
    experiment.status, experiment.started_at = Status.RUNNING, timezone.now()
    experiment.save(update_fields=["status", "started_at", "updated_at"])
    _changed(experiment)
    return experiment


def _changed(experiment: Experiment) -> None:
    experiments_live_reset()
    after_commit_send(EXPERIMENT_TRACK, experiment.pk)
    after_commit_send(REGISTRY_SYNC)


@transaction.atomic
def experiment_end(*, experiment: Experiment, status: str, decision: dict[str, Any]) -> Experiment:
    """End a running experiment (stopped, promoted, rolled back) with why; traffic goes back to the active version."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != Status.RUNNING and not (status == Status.PROMOTED and experiment.status == Status.STOPPED):
        raise ExperimentConflict(f"Experiment {experiment.name} is {experiment.status}, not running")
    experiment.status = status
    experiment.ended_at = experiment.ended_at or timezone.now()
    experiment.decision = {**(experiment.decision or {}), **decision, "at": timezone.now().isoformat()}
    experiment.save(update_fields=["status", "ended_at", "decision", "updated_at"])
    _changed(experiment)
    return experiment


def experiment_stop(*, experiment: Experiment, reason: str = "stopped by hand") -> Experiment:
    return experiment_end(experiment=experiment, status=Status.STOPPED, decision={"action": "stopped", "reason": reason})


def experiment_rollback(*, experiment: Experiment, reason: str, breaches: list[dict[str, Any]]) -> Experiment:
    """A guardrail breached: every request goes to control from the next assignment refresh; the channels are told."""
    experiment = experiment_end(experiment=experiment, status=Status.ROLLED_BACK,
                                decision={"action": "rolled_back", "reason": reason, "breaches": breaches})
    after_commit_send(EXPERIMENT_NOTIFY, experiment.pk)
    return experiment


@transaction.atomic
def experiment_promote(*, experiment: Experiment, variant: str = "") -> Experiment:
    """Make an arm's prompt version the active one (the decided winner unless `variant` names another arm), and end
    the experiment as promoted."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status not in (Status.RUNNING, Status.STOPPED):
        raise ExperimentConflict(f"Experiment {experiment.name} is {experiment.status}; only a running or stopped one "
                                 "is promoted")
    winner = variant or (experiment.decision or {}).get("winner") or ""
    arms = {arm["name"]: arm for arm in experiment.arms()}
    if not winner:
        state = (experiment.decision or {}).get("state") or "not decided yet"
        raise ExperimentConflict(f"Experiment {experiment.name} has no winner ({state}): name the arm to promote "
                                 '({"variant": "..."})')
    if winner not in arms:
        raise ExperimentConflict(f"Experiment {experiment.name} has no arm {winner!r} (arms: {', '.join(arms)})")
    version = arms[winner]["prompt_version"]
    if PromptVersion.objects.filter(version=version).exclude(program_path="").exists():
        prompt_version_activate(version=version)
    elif version != detector_get().prompt_version:  # else that version answers already
        raise ExperimentConflict(f"Prompt version {version} has no saved program to activate")
    return experiment_end(experiment=experiment, status=Status.PROMOTED,
                          decision={"action": "promoted", "winner": winner, "prompt_version": version})
