"""What every reader of MLflow's runs returns and raises: runs as plain data, and the two kinds of failure.

A reader knows MLflow and nothing of the mirror: not its table, not Django's connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from intentsite.exceptions import Unavailable, UpstreamRefused

MLFLOW_SCHEMA_REVISION = "dc11669786a5"
SQL_SCHEMES = ("sqlite:", "postgresql", "mysql")
# MLflow error codes that mean "try again later".
TRANSIENT_ERROR_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED",
                                   "DEADLINE_EXCEEDED", "ABORTED"})
IN_CHUNK = 10_000  # run ids per `IN (...)` (under SQLite's 250 k and Postgres' 65 k parameter limits)


class MlflowSourceUnavailable(Unavailable):
    """MLflow cannot be read right now (connection refused, database locked, 5xx): retry later."""

    def __str__(self) -> str:
        return f"MLflow cannot be reached right now: {super().__str__()}"


class MlflowSourceError(UpstreamRefused):
    """MLflow answered, but not with what the mirror can use: retrying will not help."""

    def __str__(self) -> str:
        return f"MLflow refused: {super().__str__()}"


@dataclass(slots=True)
class SourceRun:
    """One MLflow run as the mirror sees it: times in ms since the epoch, latest metric values."""

    run_id: str
    experiment_id: str
    status: str
    lifecycle: str
    start_time: int
    end_time: int | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class RunSource(Protocol):
    kind: str

    def experiment_id_get(self, name: str) -> str | None: ...

    def runs_count(self, *, experiment_id: str, since_ms: int | None) -> int | None: ...

    def runs_read(self, *, experiment_id: str, since_ms: int | None, page_size: int,
                  position: dict[str, Any] | None = None, overlap_ms: int = 0) -> Iterator[list[SourceRun]]: ...

    def runs_get(self, *, experiment_id: str, run_ids: Iterable[str]) -> list[SourceRun]: ...

    def run_ids_list(self, *, experiment_id: str, since_ms: int | None = None) -> dict[str, str]: ...


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
