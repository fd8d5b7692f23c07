"""The tracking outbox, once: lease, retry, dead letters, flush and replay of the rows workers write to MLflow.

A worker takes rows with a lease and gives them back for a retry or as a dead letter; the flush re-sends what a
lost message left, a replay revives dead letters. Services queue the tasks by name (`task_send`).

Both outboxes (`DetectionRecord`, `DetectionFeedback`) are `intent.models.Outbox` rows keyed by request id. A
claim is one conditional UPDATE that stamps a fresh token, then a read of the rows carrying it: atomic on any
database, so two workers never hold the same row.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from .models import DetectionFeedback, Outbox
from .tracking import TrackingPermanentError

logger = logging.getLogger(__name__)

# The tasks, by name: services send them without importing `intent.tasks` (which imports the services).
DETECTIONS_TRACK = "intent.tasks.detections_track"
FEEDBACK_TRACK = "intent.tasks.feedback_track"
SHADOW_DETECT = "intent.tasks.shadow_detect_task"  # shadow experiments' candidates, run by a worker
EXPERIMENT_TRACK = "intent.tasks.experiment_track_task"  # an experiment's run in MLflow, after each change
EXPERIMENT_NOTIFY = "intent.tasks.experiment_notify_task"  # its channels told of a rollback or a decision
REGISTRY_SYNC = "intent.tasks.prompt_registry_sync_task"  # the registry's aliases moved after a change
ANALYTICS_SYNC = "analytics.tasks.runs_sync_task"  # the other app's, by name: a sync right after runs are logged
ANALYTICS_REFRESH = "analytics.tasks.runs_refresh_task"  # the other app's: sent through the broker, never inline
BATCH_SIZE = 200  # request ids per message


class Delivery(StrEnum):
    """What one attempt did with a row."""

    LOGGED = "logged"  # written to MLflow
    RETRY = "retry"  # not written now; released for another attempt
    WAITING = "waiting"  # not attempted: the run it belongs on is not logged yet (feedback on a new detection)
    DEAD = "dead"  # refused by MLflow, or past its retry window: a dead letter
    SKIPPED = "skipped"  # not claimed: logged or dead already, or another worker holds it


@dataclass
class OutboxOutcome:
    """What an attempt did with each request id it was given, and the last error it met."""

    deliveries: dict[str, Delivery] = field(default_factory=dict)
    last_error: str = ""

    def add(self, request_id: str, delivery: Delivery) -> None:
        self.deliveries[request_id] = delivery

    def of(self, delivery: Delivery) -> list[str]:
        return [request_id for request_id, done in self.deliveries.items() if done == delivery]

    def counts(self) -> dict[str, int]:
        return {delivery.value: len(self.of(delivery)) for delivery in Delivery}

    @property
    def logged(self) -> list[str]:
        return self.of(Delivery.LOGGED)

    @property
    def retry(self) -> list[str]:
        return self.of(Delivery.RETRY)

    @property
    def waiting(self) -> list[str]:
        return self.of(Delivery.WAITING)

    @property
    def dead(self) -> list[str]:
        return self.of(Delivery.DEAD)

    @property
    def skipped(self) -> list[str]:
        return self.of(Delivery.SKIPPED)


def task_send(*, name: str, args: list | None = None, **options) -> None:
    """Queue one of this app's tasks by name. With `CELERY_TASK_ALWAYS_EAGER` it runs inline instead, as `.delay()`
    would: the tasks modules are then found the way a worker finds them (the app's autodiscovery)."""
    app = current_app
    if not app.conf.task_always_eager:
        app.send_task(name, args=args, **options)
        return
    if name not in app.tasks:
        app.loader.import_default_modules()
    app.tasks[name].apply_async(args=args, **options)


def outbox_claim(*, model: type[Outbox], request_ids: list[str]) -> list:
    """Take a lease on the pending rows among these of an outbox model (detection records, feedback),
    atomically on any database: one conditional UPDATE, then the rows that carry this lease's token."""
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=timezone.now())
    return _lease_stamp(model.objects.filter(request_id__in=request_ids, state=Outbox.State.PENDING).filter(free))


def outbox_claim_fresh(*, model: type[Outbox], limit: int) -> list:
    """Take a lease on up to `limit` of the oldest pending rows that no attempt has taken yet (their own message is
    still on its way; it will find them taken and skip them). Never a row waiting for its retry: those keep their
    backoff."""
    if limit <= 0:
        return []
    fresh = model.objects.filter(state=Outbox.State.PENDING, attempts=0, lease_until__isnull=True)
    pks = list(fresh.order_by("pk").values_list("pk", flat=True)[:limit])
    return _lease_stamp(fresh.filter(pk__in=pks)) if pks else []


def _lease_stamp(rows: QuerySet) -> list:
    """Lease `rows` (a conditional query) with a fresh token in one UPDATE, and return the rows that carry it:
    atomic on any database, so two claims never hold the same row."""
    token = uuid.uuid4().hex
    rows.update(lease_until=timezone.now() + timedelta(seconds=settings.TRACKING_LEASE_S), lease_token=token,
                attempts=F("attempts") + 1)
    return list(rows.model.objects.filter(lease_token=token, state=Outbox.State.PENDING))


def outbox_renew(*, rows: list) -> list:
    """Extend the lease of rows a worker is about to write and return those it still holds. A batch can outlast
    its lease (`TRACKING_LEASE_S`); a row whose lease ran out may have been claimed since by another worker (the
    flush re-sent it), and writing it too would make a second run. Renewing row by row, just before each write,
    makes the two exclusive: a renewed lease cannot be claimed, a claimed row is not renewed."""
    held = []
    for token, group in _by_token(rows).items():
        model, pks = type(group[0]), [row.pk for row in group]
        until = timezone.now() + timedelta(seconds=settings.TRACKING_LEASE_S)
        mine = model.objects.filter(pk__in=pks, lease_token=token, state=Outbox.State.PENDING)
        mine.update(lease_until=until)
        still = set(mine.values_list("pk", flat=True))
        held += [row for row in group if row.pk in still]
    return held


def outbox_mark(*, rows: list, per_row: list[str], **common) -> int:
    """Save a write's outcome on rows where this worker's lease is still on them; returns how many. `per_row` names
    the fields whose values differ from row to row (saved from the row objects), `common` the values all of them
    take (one UPDATE: Django's `bulk_update` builds a CASE per field and row, 3.7 ms a row for five fields). A row
    whose lease another claim took keeps its state: that claim finds the run by its request id."""
    saved = 0
    for token, group in _by_token(rows).items():
        mine = type(group[0]).objects.filter(pk__in=[row.pk for row in group], lease_token=token,
                                             state=Outbox.State.PENDING)
        with transaction.atomic():
            if per_row:
                mine.bulk_update(group, per_row)  # first: the common values may change what `mine` selects
            saved += mine.update(**common)
    if saved < len(rows):
        logger.warning("%s of %s row(s) were claimed by another worker while this one wrote them", len(rows) - saved,
                       len(rows))
    return saved


def _by_token(rows: list) -> dict[str, list]:
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row.lease_token, []).append(row)
    return groups


def outbox_release(*, row: Outbox, **fields) -> None:
    """Give the row's lease back, with `fields` changed; a lease another claim took since is left alone."""
    type(row).objects.filter(pk=row.pk, lease_token=row.lease_token).update(lease_until=None, lease_token="",
                                                                            **fields)


def outbox_fail(*, row: Outbox, error: BaseException, window_start: datetime, outcome: OutboxOutcome) -> None:
    """Release a row whose write failed: for a retry, or as a dead letter when MLflow refused it (a permanent
    error) or its retry window (`TRACKING_RETRY_WINDOW_S` from `window_start`) is over."""
    described = f"{type(error).__name__}: {error}"[:2000]
    outcome.last_error = described
    window_over = timezone.now() - window_start > timedelta(seconds=settings.TRACKING_RETRY_WINDOW_S)
    if isinstance(error, TrackingPermanentError) or window_over:
        logger.error("%s %s is a dead letter after %s attempts: %s", row._meta.verbose_name.capitalize(),
                     row.request_id, row.attempts, described)
        outbox_release(row=row, state=Outbox.State.DEAD, last_error=described)
        outcome.add(str(row.request_id), Delivery.DEAD)
        return
    outbox_release(row=row, last_error=described)
    outcome.add(str(row.request_id), Delivery.RETRY)


def outbox_flush(*, rows: QuerySet, task: str, age_field: str, older_than_s: float | None = None,
                 batch_size: int = BATCH_SIZE) -> int:
    """Send again the pending rows among `rows` that no worker holds and that are older (by `age_field`) than
    `TRACKING_FLUSH_AFTER_S`: their message was lost (a broker that was down, a worker killed), or it would have
    come by now. Returns how many were sent."""
    now = timezone.now()
    older_than = timedelta(seconds=settings.TRACKING_FLUSH_AFTER_S if older_than_s is None else older_than_s)
    pending = [
        str(request_id)
        for request_id in rows.filter(state=Outbox.State.PENDING, **{f"{age_field}__lt": now - older_than})
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .order_by(age_field)
        .values_list("request_id", flat=True)[: batch_size * 50]
    ]
    _send_in_batches(task, pending, batch_size=batch_size)
    return len(pending)


def outbox_replay(*, model: type[Outbox], request_ids: list[str] | None, task: str, window_field: str) -> int:
    """Put the dead letters of an outbox (all, or those among `request_ids`) back to pending with a fresh retry
    window (`window_field` set to now), and send them. Returns how many."""
    dead = model.objects.filter(state=Outbox.State.DEAD)
    if request_ids is not None:
        dead = dead.filter(request_id__in=request_ids)
    revived = [str(request_id) for request_id in dead.values_list("request_id", flat=True)]
    model.objects.filter(request_id__in=revived, state=Outbox.State.DEAD).update(
        state=Outbox.State.PENDING, lease_until=None, lease_token="", **{window_field: timezone.now()})
    _send_in_batches(task, revived)
    return len(revived)


def feedback_waiting_send(*, request_ids: list[str]) -> int:
    """Send the pending feedback on these detections, whose runs were just logged: it was waiting for them."""
    waiting = [
        str(request_id)
        for request_id in DetectionFeedback.objects.filter(
            request_id__in=request_ids, state=Outbox.State.PENDING
        ).values_list("request_id", flat=True)
    ]
    if waiting:
        try:
            task_send(name=FEEDBACK_TRACK, args=[waiting])
        except Exception:  # noqa: BLE001 - the flush re-sends them
            logger.warning("Could not queue %s feedback(s); the flush will", len(waiting), exc_info=True)
    return len(waiting)


def _send_in_batches(task: str, request_ids: list[str], *, batch_size: int = BATCH_SIZE) -> None:
    for start in range(0, len(request_ids), batch_size):
        task_send(name=task, args=[request_ids[start : start + batch_size]])
