"""SQLite tuning for connections that SQLAlchemy opens (MLflow's store, kombu's embedded broker)."""

import functools


@functools.cache
def sqlalchemy_sqlite_tune() -> None:
    """WAL and synchronous=NORMAL on every SQLite connection SQLAlchemy opens in this process: a commit
    stops costing an fsync, and readers never block the writer. Idempotent."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, _record):
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
