"""The MLflow store behind the tracking URI: one client per process, the experiments by name, the bulk store.

`mlflow` is imported inside the functions: web and Celery parent processes import this module but never touch
MLflow before they fork. A Celery worker's parent may load MLflow's modules (`tracking_modules_preload`: code
only, no client, connection or thread) so that its pool children share them instead of importing them each."""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from intentsite import contract
from intentsite.sqlite import sqlalchemy_sqlite_tune
from intentsite.uris import uri_display

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

# A process looks its experiment up again this often (seconds): after `recreate_experiments --reset`
# the name points at a new experiment, and every process follows within this long, without a restart.
EXPERIMENT_RECHECK_S = 60.0


class TrackingPermanentError(Exception):
    """MLflow refused the payload itself: retrying cannot help."""


def tracking_uri_display(uri: str | None = None) -> str:
    """The tracking URI with any credentials removed."""
    return uri_display(uri or settings.MLFLOW_TRACKING_URI)


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    return None


def tracking_modules_preload() -> None:
    """Import the MLflow modules the writers and the mirror's readers use (~3 s of CPU), creating nothing."""
    import mlflow.store.tracking.rest_store  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import mlflow.tracing.client  # noqa: F401 - the traces' writer (tracking.traces)
    from mlflow.entities import Span  # noqa: F401
    from mlflow.tracking import MlflowClient  # noqa: F401


def client_concurrency(uri: str | None = None) -> int:
    """Runs the client path keeps in flight: TRACKING_CLIENT_CONCURRENCY for an `http(s)://` server (its calls
    mostly wait on the network and the server), one for a store this process writes itself (a database store takes
    the bulk path; the client path there would only queue on the database's write lock)."""
    uri = uri or settings.MLFLOW_TRACKING_URI
    return max(1, settings.TRACKING_CLIENT_CONCURRENCY) if uri.startswith(("http://", "https://")) else 1


_clients: dict[tuple[int, str], MlflowClient] = {}
_clients_lock = threading.Lock()


def tracking_client(uri: str | None = None) -> MlflowClient:
    """One MlflowClient per process and URI, created after fork, on first use.

    A fresh SQLite store is created under an exclusive file lock: several processes running MLflow's
    migrations on one new file at once corrupt it.
    """
    uri = uri or settings.MLFLOW_TRACKING_URI
    key = (os.getpid(), uri)
    client = _clients.get(key)
    if client is not None:
        return client
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            from mlflow.tracking import MlflowClient

            path = _sqlite_path(uri)
            if path is not None:
                sqlalchemy_sqlite_tune()
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(f"{path}.init.lock", "w") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    client = MlflowClient(tracking_uri=uri)
                    client.search_experiments(max_results=1)  # creates/migrates the schema, under the lock
            else:
                # `set_terminated` would read the run back (a fourth call a run) to print its URL to stdout
                os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
                client = MlflowClient(tracking_uri=uri)
            _clients[key] = client
    return client


@functools.cache
def _experiment_ids() -> dict[tuple[str, str], tuple[str, float]]:
    return {}


@functools.cache
def _experiment_artifact_locations() -> dict[str, str]:
    return {}


_bulk_stores: dict[tuple[int, str], Any] = {}


def experiment_id_get(name: str | None = None, *, uri: str | None = None) -> str:
    """The experiment's id, creating it (or restoring it, if deleted) on first use; looked up again every
    `EXPERIMENT_RECHECK_S`, so a process follows an experiment that was reset under its name."""
    from mlflow.exceptions import MlflowException

    name = name or settings.MLFLOW_EXPERIMENT_NAME
    uri = uri or settings.MLFLOW_TRACKING_URI
    cache = _experiment_ids()
    cached = cache.get((uri, name))
    if cached is not None and time.monotonic() - cached[1] < EXPERIMENT_RECHECK_S:
        return cached[0]
    client = tracking_client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(name, artifact_location=_artifact_location(uri, name))
        except MlflowException:  # another process created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    cache[(uri, name)] = (experiment_id, time.monotonic())
    return experiment_id


def experiment_artifact_location(experiment_id: str) -> str:
    """Where the experiment keeps its runs' artifacts (asked once per process)."""
    locations = _experiment_artifact_locations()
    location = locations.get(experiment_id)
    if location is None:
        location = locations[experiment_id] = tracking_client().get_experiment(experiment_id).artifact_location
    return location


def experiment_cache_clear() -> None:
    _experiment_ids().clear()
    _experiment_artifact_locations().clear()
    _bulk_stores.clear()


def _artifact_location(uri: str, name: str) -> str | None:
    return contract.artifact_location(tracking_uri=uri, artifact_root=settings.MLFLOW_ARTIFACT_ROOT, experiment=name)


def experiment_has_runs(name: str | None = None) -> bool:
    """Whether the experiment (the detection one by default) holds any active run."""
    return bool(tracking_client().search_runs([experiment_id_get(name)], max_results=1))


def store_init(*, uri: str | None = None) -> str:
    """Create (or migrate) the store and the detection experiment: run once, before workers start."""
    return experiment_id_get(uri=uri)


def bulk_store(uri: str | None = None):
    """MLflow's SqlAlchemyStore behind the tracking URI when the bulk path (`tracking.bulk`) may write it, else
    None: a database store (sqlite:, postgresql:, mysql:) whose schema revision is the installed MLflow's."""
    uri = uri or settings.MLFLOW_TRACKING_URI
    cached = _bulk_stores.get((os.getpid(), uri))
    if cached is not None or (os.getpid(), uri) in _bulk_stores:
        return cached
    store = None
    if settings.TRACKING_BULK_WRITES and uri.split(":", 1)[0].split("+", 1)[0] in {"sqlite", "postgresql", "mysql"}:
        from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        candidate = tracking_client(uri)._tracking_client.store
        if isinstance(candidate, SqlAlchemyStore):
            revision, expected = _get_schema_version(candidate.engine), _get_latest_schema_revision()
            if revision == expected:
                store = candidate
            else:
                logger.warning("MLflow schema %s is not %s: logging runs one by one through the client",
                               revision, expected)
    _bulk_stores[(os.getpid(), uri)] = store
    return store
