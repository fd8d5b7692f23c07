"""Celery workers' heartbeats: written by each worker's main process, read by the health endpoint."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from ..models import WorkerHeartbeat, heartbeat_stale_after_s


def worker_heartbeat_record(*, hostname: str, pid: int, queues: list[str], started_at: datetime) -> None:
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        defaults={"pid": pid, "queues": queues, "started_at": started_at, "seen_at": timezone.now()},
    )


def worker_heartbeat_forget(*, hostname: str) -> None:
    """A worker that stops cleanly says so: it is not counted as alive until its heartbeat ages out."""
    WorkerHeartbeat.objects.filter(hostname=hostname).delete()


def workers_alive() -> dict:
    """The workers seen within `MISSED_BEATS` heartbeat intervals, and when any worker was last seen."""
    stale_after_s = heartbeat_stale_after_s()
    now = timezone.now()
    alive = WorkerHeartbeat.objects.alive()
    last_seen = WorkerHeartbeat.objects.order_by("-seen_at").values_list("seen_at", flat=True).first()
    return {
        "alive": [{"hostname": worker.hostname, "queues": worker.queues,
                   "seen_s_ago": round((now - worker.seen_at).total_seconds(), 3)} for worker in alive],
        "last_seen_at": None if last_seen is None else last_seen.isoformat(),
        "stale_after_s": stale_after_s,
    }
