"""The analytics app's models: the mirror and its rollups (`mirror`), finer-grained rollups (`windows`), monitors
and their alerts (`monitors`), custom boards (`boards`)."""

from .boards import Board  # noqa: F401
from .mirror import (  # noqa: F401
    COMPOUND_SEPARATOR,
    MISSED_BEATS,
    OTHER,
    PAIRED_DIMENSIONS,
    PAIRS,
    TRIPLES,
    WORKER_KEY_ENV,
    DailyRollup,
    DetectionAnalytics,
    MirroredRun,
    RollupTriple,
    RollupTripleBuilt,
    SyncState,
    WorkerHeartbeat,
    WorkerHeartbeatQuerySet,
    compound_parts,
    compound_value,
    heartbeat_stale_after_s,
    pair_of,
    triple_of,
    worker_key,
)
from .monitors import Alert, Monitor, webhook_secret_new  # noqa: F401
from .windows import FINE_MINUTES, HOURLY_MINUTES, WindowRollup  # noqa: F401
