"""What one report covers (`Scope`: an experiment's days since..until and the filters), and the cache that serves
a report's answer until the next sync finishes (`answer_cached`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db.models import QuerySet
from django.utils import timezone

from ..models import DailyRollup, MirroredRun, SyncState

Dimension = DailyRollup.Dimension
T = TypeVar("T")

# Query filter -> (rollup dimension whose values are the filter's, or None: MirroredRun column)
FILTERS: dict[str, tuple[str | None, str]] = {
    "module": (Dimension.MODULE, "current_module"),
    "user_role": (Dimension.ROLE, "user_role"),
    "model_name": (Dimension.MODEL, "model_name"),
    "tab": (Dimension.TAB, "current_tab"),
    "prompt_version": (Dimension.PROMPT_VERSION, "prompt_version"),
    "intent": (Dimension.INTENT, "detected_intent"),
    "experiment": (Dimension.EXPERIMENT, "experiment"),
    "variant": (None, "variant"),  # rolled up with its experiment (Dimension.VARIANT): the raw rows answer alone
}


@dataclass(frozen=True)
class Scope:
    """What one report covers: the days since..until (inclusive, UTC) of one experiment, and the filters."""

    experiment_id: str
    since: date
    until: date
    filters: Mapping[str, str] = field(default_factory=dict)
    # When each sync last finished: the mirror's version (empty before any sync), part of the cache key.
    version: str = ""
    # Every mirrored experiment's id by name, as read with the version (the evaluations' experiment: no query more).
    experiment_ids: Mapping[str, str] = field(default_factory=dict)

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    def header(self) -> dict[str, Any]:
        return {"period": {"days": self.days, "since": self.since.isoformat(), "until": self.until.isoformat()},
                "filters": dict(self.filters)}

    def start(self) -> datetime:
        return datetime.combine(self.since, time.min, tzinfo=UTC)

    def last_moment(self) -> datetime:
        """The period's last microsecond (the databases' precision): the day after 9999-12-31 cannot be written."""
        return datetime.combine(self.until, time.max, tzinfo=UTC)

    def raw_runs(self, *, by_start_time: bool = False) -> QuerySet:
        """The period's mirrored runs that match the filters; `by_start_time`: the period as a start_time
        range (the same runs: `day` is start_time's UTC date), for the indexes on start_time."""
        period = ({"start_time__gte": self.start(), "start_time__lte": self.last_moment()} if by_start_time
                  else {"day__gte": self.since, "day__lte": self.until})
        rows = MirroredRun.objects.filter(experiment_id=self.experiment_id, **period)
        return rows.filter(**{FILTERS[name][1]: value for name, value in self.filters.items()})


def scope_get(*, days: int, until: date | None = None, filters: Mapping[str, str] | None = None,
              experiment_name: str | None = None) -> Scope:
    """The last `days` days up to `until` (default: today, UTC) of the detection experiment's mirror."""
    until = until or timezone.now().astimezone(UTC).date()
    filters = {name: value for name, value in (filters or {}).items() if value is not None}
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise ValueError(f"unknown filters: {sorted(unknown)}")
    name = experiment_name or settings.MLFLOW_EXPERIMENT_NAME
    states = list(SyncState.objects.order_by("experiment_name").values_list(
        "experiment_name", "experiment_id", "last_finished_at"))
    experiment_id = next((experiment for state_name, experiment, _ in states if state_name == name), "")
    version = ";".join(f"{state_name}={finished.isoformat()}" for state_name, _, finished in states
                       if finished is not None)
    return Scope(experiment_id=experiment_id, since=until - timedelta(days=days - 1), until=until,
                 filters=filters, version=version,
                 experiment_ids={state_name: experiment for state_name, experiment, _ in states if experiment})


def answer_cached(*, scope: Scope, name: str, compute: Callable[[], T]) -> T:
    """`compute()`, the answer called `name` for this scope, from the cache while no sync has finished since it was
    computed: the mirror changes only through the sync, so a cached answer is exact until the next sync ends (a
    dashboard polling between two syncs reads the cache). Nothing is cached before a first sync. What is cached is
    the answer as sent (serialized once, not on every request: see bench/analytics.py)."""
    if not scope.version or settings.ANALYTICS_CACHE_TIMEOUT_S <= 0:
        return compute()
    identity = repr((name, scope.experiment_id, scope.since, scope.until, sorted(scope.filters.items()),
                     scope.version))
    key = "analytics:" + hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
    answer = cache.get(key)
    if answer is None:
        answer = compute()
        cache.set(key, answer, timeout=settings.ANALYTICS_CACHE_TIMEOUT_S)
    return answer
