"""Celery: the broker, the two queues and their routes, and beat's schedule."""

import os

from kombu import Exchange, Queue

from .analytics import ANALYTICS_SYNC_INTERVAL_S, MONITORS_EVALUATE_INTERVAL_S
from .base import TIME_ZONE, VAR_DIR, env_bool
from .detection import (
    EXPERIMENTS_EVALUATE_INTERVAL_S,
    GAPS_MINE_INTERVAL_S,
    PURGE_INTERVAL_S,
    TRACKING_FLUSH_INTERVAL_S,
)

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite'}")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Messages a worker process may hold beyond the one it runs: a polling broker (the embedded SQLite
# one) then hands over a batch per poll instead of one message per poll. Nothing depends on these
# messages for durability: the outbox table does.
CELERY_WORKER_PREFETCH_MULTIPLIER = int(os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER", "16"))
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# How long a worker waits for the result of a task whose pool process died before calling it lost (Celery's default:
# 10 s). Results are ignored here (the outbox says what was written), and a worker stopping while pool processes
# die (SIGTERM to its process group, new tasks still arriving) waited this long before it could exit.
CELERY_WORKER_LOST_WAIT = float(os.environ.get("CELERY_WORKER_LOST_WAIT", "2"))
# Two queues: `celery` carries the tracking (one message per detection: a backlog can be thousands deep), and
# `periodic` beat's sync and flush, so that a backlog never holds them past their expiry and starves the mirror.
# A worker started without -Q consumes both (taking from each in turn); `-Q periodic` gives them a worker of
# their own. Which tasks go where: CELERY_TASK_ROUTES (beat's entries name their queue too).
CELERY_TASK_DEFAULT_QUEUE = "celery"
PERIODIC_QUEUE = "periodic"
CELERY_TASK_QUEUES = tuple(Queue(name, Exchange(name), routing_key=name) for name in (CELERY_TASK_DEFAULT_QUEUE, PERIODIC_QUEUE))
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"


def _every(task: str, seconds: float) -> dict:
    """Beat's entry for `task` every `seconds`, on the periodic queue; a message not taken within its own period
    expires (the next one is on its way). django-celery-beat's DatabaseScheduler stores `expire_seconds` and drops
    `expires`; Celery's own scheduler reads `expires`: both are set."""
    return {"task": task, "schedule": seconds,
            "options": {"expires": seconds, "expire_seconds": seconds, "queue": PERIODIC_QUEUE}}


CELERY_BEAT_SCHEDULE = {
    "tracking-flush": _every("intent.tasks.detections_flush", TRACKING_FLUSH_INTERVAL_S),
    "analytics-sync": _every("analytics.tasks.runs_sync_task", ANALYTICS_SYNC_INTERVAL_S),
    "monitors-evaluate": _every("analytics.tasks.monitors_evaluate_task", MONITORS_EVALUATE_INTERVAL_S),
    "experiments-evaluate": _every("intent.tasks.experiments_evaluate_task", EXPERIMENTS_EVALUATE_INTERVAL_S),
    "gaps-mine": _every("intent.tasks.gaps_mine_task", GAPS_MINE_INTERVAL_S),
    "expired-data-purge": _every("intent.tasks.expired_data_purge_task", PURGE_INTERVAL_S),
}
# Beat's tasks, and the alerts' deliveries, go to the periodic queue however they are sent.
CELERY_TASK_ROUTES = {task: {"queue": PERIODIC_QUEUE} for task in
                      [entry["task"] for entry in CELERY_BEAT_SCHEDULE.values()] + ["analytics.tasks.alert_deliver_task"]}
if CELERY_BROKER_URL.startswith(("redis", "rediss")):
    # An unacknowledged message (its worker died) is delivered again after this long.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT_S", "600"))}
CELERY_TIMEZONE = TIME_ZONE
