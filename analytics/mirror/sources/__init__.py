"""Readers of MLflow's runs for the mirror, one per way in, behind one small interface (`base.RunSource`):

- `client`: `MlflowClient.search_runs`, any tracking URI; the reference;
- `sql`: MLflow's tables read in bulk, for database stores of MLflow 3.17.2's schema;
- `attached`: a SQLite store read inside the mirror's own SQLite connection.
"""

from __future__ import annotations

import logging

from django.conf import settings

from intentsite.uris import uri_display

from .attached import AttachedRunSource
from .base import MLFLOW_SCHEMA_REVISION, SQL_SCHEMES, MlflowSourceError, RunSource
from .client import ClientRunSource, clients_reset
from .sql import SqlRunSource, engines_reset, sql_schema_revision

logger = logging.getLogger(__name__)


def run_source_get(*, attachable: bool, uri: str | None = None, kind: str | None = None) -> RunSource:
    """The reader for this tracking URI. `kind`: `auto` (the store's tables when its schema is the known one:
    attached when both ends are SQLite files and the caller says it can attach — `attachable` — else read with SQL;
    otherwise the client), `client`, `sql` or `attached` (these two fail when they cannot be used)."""
    uri = uri or settings.MLFLOW_TRACKING_URI
    kind = kind or settings.ANALYTICS_SYNC_SOURCE
    if kind == "client":
        return ClientRunSource(uri)
    if kind not in {"auto", "sql", "attached"}:
        raise ValueError(f"ANALYTICS_SYNC_SOURCE must be auto, client, sql or attached, not {kind!r}")
    if uri.startswith(SQL_SCHEMES):
        revision = sql_schema_revision(uri)
        if revision == MLFLOW_SCHEMA_REVISION:
            path = uri.split(":///", 1)[1] if uri.startswith("sqlite:///") else ""
            if kind in {"auto", "attached"} and attachable and path and path != ":memory:" and "?" not in path:
                return AttachedRunSource(uri)
            if kind != "attached":
                return SqlRunSource(uri)
        elif revision is not None:
            logger.warning("MLflow store schema is %s, not %s (MLflow 3.17.2): reading through the client",
                           revision, MLFLOW_SCHEMA_REVISION)
    if kind == "attached":
        raise MlflowSourceError(f"The attached path cannot read {uri_display(uri)}: it needs a SQLite store file of "
                                "MLflow 3.17.2's schema, a SQLite mirror, and a sync started outside a transaction")
    if kind == "sql":
        raise MlflowSourceError(f"The SQL fast path cannot read {uri_display(uri)}")
    return ClientRunSource(uri)


def sources_reset() -> None:
    """Forget this process's clients and engines (tests switch stores)."""
    engines_reset()
    clients_reset()
