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


def kombu_sqlalchemy_models_define(transport_options: dict | None = None) -> None:
    """Define kombu's two SQLAlchemy broker models (`Queue`, `Message`) now, together. kombu defines them lazily,
    one after the other, when a channel first opens; importing MLflow's SQLAlchemy store configures every mapper of
    the process. A thread importing MLflow between the two (a web process: a request's thread while the dispatch
    thread sends its first task) fails with "expression 'Message' failed to locate a name": a 500, found by
    schemathesis. Call it once, from the thread that starts the process. Idempotent."""
    from kombu.transport.sqlalchemy import Channel

    Channel.__new__(Channel)._configure_entity_tablenames(transport_options or {})
