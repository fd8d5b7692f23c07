"""Settings for intentsite: every knob is an environment variable with an embedded default.

The defaults need no server (SQLite database, SQLite-backed Celery broker, MLflow on SQLite);
point `DATABASE_URL`, `CELERY_BROKER_URL` and `MLFLOW_TRACKING_URI` at real servers for the
distributed setup. There are no production-only branches.

One module per concern: `base` (Django, the API, the environment helpers), `detection` (the detector and its
MLflow tracking), `analytics` (the mirror, reports, monitors), `tasks` (Celery and beat's schedule, which reads the
others' intervals).
"""

from .analytics import *  # noqa: F403
from .base import *  # noqa: F403
from .detection import *  # noqa: F403
from .tasks import *  # noqa: F403
