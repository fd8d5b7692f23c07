"""Which arm of which running experiment answers a request: a deterministic hash, no database round trip.

The running experiments are read once per `INTENT_EXPERIMENTS_REFRESH_S` per process (one small query), so a start,
a stop or a rollback reaches every process within that time. An arm is chosen by where
sha256(experiment name, unit) falls in [0, 1), the unit being the caller's `subject_id` (`assignment: subject`: the
same subject gets the same arm in every process, after every restart, for as long as the weights stay) or the
request id (`request`). Only an HMAC of the subject id is kept (the run's `subject_hash` tag).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings

from ..models import Experiment

_SCALE = float(1 << 64)


@dataclass(frozen=True)
class Arm:
    name: str
    prompt_version: str
    upper: float  # ab: the arm's bucket ends here (cumulative weights); shadow: the share of requests it runs on


@dataclass(frozen=True)
class LiveExperiment:
    id: int
    name: str
    mode: str
    by_subject: bool
    scope: tuple[tuple[str, str], ...]
    arms: tuple[Arm, ...]  # ab: control first; shadow: the candidates

    def admits(self, *, user_role: str, current_module: str) -> bool:
        context = {"module": current_module, "user_role": user_role}
        return all(context.get(key) == value for key, value in self.scope)

    def bucket(self, unit: str) -> float:
        """Where this unit falls in [0, 1) for this experiment (independent between experiments)."""
        digest = hashlib.sha256(f"{self.name}\x1f{unit}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / _SCALE


@dataclass(frozen=True)
class Assignment:
    experiment_id: int
    experiment: str
    variant: str
    prompt_version: str


@dataclass(frozen=True)
class Assignments:
    ab: Assignment | None = None
    shadows: tuple[Assignment, ...] = ()
    subject_hash: str = ""


NONE = Assignments()


@dataclass
class _Cache:
    experiments: tuple[LiveExperiment, ...] = ()
    read_at: float = field(default=-1e18)


_cache = _Cache()
_lock = threading.Lock()


def live_experiment_build(experiment: Experiment) -> LiveExperiment:
    arms, upper = [], 0.0
    for arm in experiment.arms():
        upper = upper + float(arm["weight"]) if experiment.mode == Experiment.Mode.AB else float(arm["weight"])
        arms.append(Arm(name=arm["name"], prompt_version=arm["prompt_version"], upper=upper))
    if experiment.mode == Experiment.Mode.SHADOW:
        arms = arms[1:]  # control is the live answer itself
    return LiveExperiment(id=experiment.pk, name=experiment.name, mode=experiment.mode,
                          by_subject=experiment.assignment == Experiment.Assignment.SUBJECT,
                          scope=tuple(sorted((experiment.scope or {}).items())), arms=tuple(arms))


def experiments_live() -> tuple[LiveExperiment, ...]:
    """The running experiments, as this process last read them (at most INTENT_EXPERIMENTS_REFRESH_S ago)."""
    now = time.monotonic()
    if now - _cache.read_at < settings.INTENT_EXPERIMENTS_REFRESH_S:
        return _cache.experiments
    with _lock:
        if now - _cache.read_at >= settings.INTENT_EXPERIMENTS_REFRESH_S:
            running = Experiment.objects.filter(status=Experiment.Status.RUNNING).order_by("pk")
            _cache.experiments = tuple(live_experiment_build(experiment) for experiment in running)
            _cache.read_at = time.monotonic()
    return _cache.experiments


def experiments_live_reset() -> None:
    """Read the running experiments again at the next request (tests; a service that changed them in-process)."""
    _cache.read_at = -1e18


def subject_hash_make(subject_id: str) -> str:
    """What is kept of a subject id: HMAC-SHA256 under the site's secret, 32 hex digits."""
    return hmac.new(settings.SECRET_KEY.encode(), subject_id.encode(), hashlib.sha256).hexdigest()[:32]


def experiment_assign(*, request_id: uuid.UUID, subject_id: str = "", user_role: str = "",
                      current_module: str = "") -> Assignments:
    """The request's arm in the running `ab` experiment whose scope admits it (if any), and the shadow candidates it
    is sampled for. Without a subject id, subject-sticky experiments assign per request as well."""
    experiments = experiments_live()
    if not experiments:
        return NONE
    ab, shadows = None, []
    for experiment in experiments:
        if not experiment.admits(user_role=user_role, current_module=current_module):
            continue
        bucket = experiment.bucket(subject_id if experiment.by_subject and subject_id else str(request_id))
        if experiment.mode == Experiment.Mode.AB:
            if ab is None:
                arm = next((arm for arm in experiment.arms if bucket < arm.upper), experiment.arms[0])
                ab = Assignment(experiment.id, experiment.name, arm.name, arm.prompt_version)
            continue
        shadows.extend(Assignment(experiment.id, experiment.name, arm.name, arm.prompt_version)
                       for arm in experiment.arms if bucket < arm.upper)
    if ab is None and not shadows:
        return NONE
    return Assignments(ab=ab, shadows=tuple(shadows), subject_hash=subject_hash_make(subject_id) if subject_id else "")
