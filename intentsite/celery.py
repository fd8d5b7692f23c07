"""The Celery application: configured from Django settings (`CELERY_*`), tasks found in the apps."""

import gc
import logging
import os
import threading

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "intentsite.settings")

app = Celery("intentsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)


@app.on_after_configure.connect
def _prepare_embedded_broker(sender, **kwargs):
    url = str(sender.conf.broker_url)
    if url.startswith("sqla+"):
        from .sqlite import kombu_sqlalchemy_models_define

        kombu_sqlalchemy_models_define(sender.conf.broker_transport_options or {})
    if url.startswith("sqla+sqlite"):
        from .sqlite import sqlalchemy_sqlite_tune

        sqlalchemy_sqlite_tune()


# Configure now, in the thread that imports this module (Django's startup), not in the first thread that sends a
# task: see kombu_sqlalchemy_models_define.
app.conf.task_routes  # noqa: B018 - read for its side effect: loading the configuration sends on_after_configure


@worker_init.connect
def _preload_tracking_modules(**kwargs):
    """A worker's main process loads MLflow's code before its prefork pool starts: the children inherit it
    instead of importing it each (~3 s of CPU a child, at every start and every `max_tasks_per_child`)."""
    from intent.tracking import tracking_modules_preload

    tracking_modules_preload()
    # What is loaded now lives as long as the worker: out of the collector's sight, so that each full collection
    # (frequent while traces are built: thousands of small objects a batch) scans only what tasks make. Measured
    # in bench/tracking_overhead.py: runs with their traces 1.8 -> 1.3 ms a run. The pool's children inherit it.
    gc.collect()
    gc.freeze()


@worker_init.connect
def _worker_key_set(sender, **kwargs):
    """The pool inherits this worker's key (its name and main pid, as its heartbeat says them): a lease a task
    takes names the worker, and is taken over when that worker stops beating (`analytics.mirror.sync`)."""
    from analytics.models import WORKER_KEY_ENV, worker_key

    os.environ[WORKER_KEY_ENV] = worker_key(hostname=sender.hostname, pid=os.getpid())


_heartbeat_stop = threading.Event()
_heartbeat_started = threading.Event()


@worker_ready.connect
def _heartbeat_start(sender, **kwargs):
    """The main process of a worker writes a heartbeat every WORKER_HEARTBEAT_S from a thread of its own (the
    health endpoint counts the workers seen lately): a SIGKILLed worker stops beating, a busy one does not."""
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from analytics.ops.workers import worker_heartbeat_record

    if _heartbeat_started.is_set():  # worker_ready again after a lost broker connection: one thread is enough
        return
    _heartbeat_started.set()
    hostname, pid, started_at = sender.hostname, os.getpid(), timezone.now()
    queues = sorted(sender.app.amqp.queues.consume_from)

    def beat() -> None:
        while True:
            try:
                worker_heartbeat_record(hostname=hostname, pid=pid, queues=queues, started_at=started_at)
            except Exception:  # noqa: BLE001 - the database away for a moment: the next beat tries again
                logger.warning("Could not write the worker's heartbeat", exc_info=True)
                connection.close()
            if _heartbeat_stop.wait(settings.WORKER_HEARTBEAT_S):
                connection.close()
                return

    threading.Thread(target=beat, name="worker-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _heartbeat_forget(sender, **kwargs):
    from analytics.ops.workers import worker_heartbeat_forget

    _heartbeat_stop.set()
    try:
        worker_heartbeat_forget(hostname=sender.hostname)
    except Exception:  # noqa: BLE001 - it ages out instead
        logger.warning("Could not remove the worker's heartbeat", exc_info=True)


def lock_enter_exception_safe(self):
    """`with lock:` for billiard's Lock and RLock that gives the lock back if it raises after taking it.

    billiard's `SemLock.__enter__` is a Python function around the C acquire. A signal handler that
    raises (a pool child's SIGTERM handler raises SystemExit) and whose signal came while the process
    waited runs at the first check after the C call returned with the lock, which is still inside that
    function: `__enter__` raises with the lock taken, the `with` block never starts and its `__exit__`
    never releases it. A lock shared between processes stays taken after its process is gone.
    """
    semlock = self._semlock
    held = semlock._count() if semlock._is_mine() else 0
    try:
        return semlock.__enter__()
    except BaseException:
        if semlock._is_mine() and semlock._count() > held:  # taken by this very call
            semlock.release()
        raise


@worker_process_init.connect
def pool_child_locks_exception_safe(**kwargs):
    """In each prefork pool child, billiard's locks are taken with `lock_enter_exception_safe`.

    Without it, a worker given SIGTERM on its whole process group or cgroup (systemd's default
    KillMode=control-group, `kill -TERM -<pgid>`) hung at exit in about half of the stops of an idle
    worker, until SIGKILL. With a broker that has no event loop (the embedded SQLite one) Celery runs
    billiard's plain Pool, whose children share one inqueue; idle children wait for its read lock
    (`SimpleQueue._rlock`, a SemLock) while one of them holds it, blocked reading the pipe. All get SIGTERM
    at once: the reader leaves its `with` block and releases the lock, a waiter's acquire can return with
    it before that waiter's handler runs, and the waiter exits holding it. The main process's pool
    finalizer then blocks at exit on that lock, without a timeout (`Pool._terminate_pool` ->
    `_help_stuff_finish` -> `inqueue._rlock.acquire()`). SIGINT never did this: pool children ignore it
    and leave when the main process closes the pool; neither did SIGTERM to the main process alone, nor a
    Redis broker (a broker with an event loop, Redis or AMQP, gets the pool that gives each child its own
    queue).
    """
    from billiard import synchronize

    for lock_class in (synchronize.Lock, synchronize.RLock):
        lock_class.__enter__ = lock_enter_exception_safe
