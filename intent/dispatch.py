"""Hands committed detection records (and shadow experiments' work) to Celery from a background thread, in batches.

Publishing a message costs a broker round trip (several ms on the embedded SQLite broker); a request
should not pay it. The request only puts its record id on an in-process queue; this thread drains the
queue and sends one `detections_track` message per batch. If the process dies with ids still queued,
nothing is lost: their rows are pending in the outbox table and the periodic flush sends them.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any

from .outbox import DETECTIONS_TRACK, SHADOW_DETECT, task_send

logger = logging.getLogger(__name__)

BATCH_SIZE = 200
BATCH_WAIT_S = 0.02  # gather what arrives within this window into the same message


class RecordPublisher:
    """Items put on an in-process queue, sent to the task `name` in batches (a list of items per message)."""

    def __init__(self, name: str = DETECTIONS_TRACK) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid: int | None = None

    def submit(self, item: Any) -> None:
        if self._pid != os.getpid():  # first use in this process (threads do not survive a fork)
            self._start()
        self._queue.put(item)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._run, name=f"publisher-{self.name}", daemon=True).start()
            self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            try:
                while len(batch) < BATCH_SIZE:
                    batch.append(self._queue.get(timeout=BATCH_WAIT_S))
            except queue.Empty:
                pass
            try:
                task_send(name=self.name, args=[batch], retry=False)
            except Exception:  # the broker is down: records stay pending and the flush re-sends them
                logger.warning("Could not queue %s item(s) for %s", len(batch), self.name, exc_info=True)


record_publisher = RecordPublisher(DETECTIONS_TRACK)
# Shadow candidates' work (sampled, best effort: what a process dies holding is not run; the live answers are kept).
shadow_publisher = RecordPublisher(SHADOW_DETECT)
