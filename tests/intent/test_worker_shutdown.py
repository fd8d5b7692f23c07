"""A real worker (prefork; with and without embedded beat) stopped with SIGTERM while it logs detections exits
in time, and no record is lost: a fresh worker logs what was left, exactly one MLflow run per request.

The SIGTERM goes to the worker's whole process group, as systemd sends it (KillMode=control-group, its
default) and as `Process.stop()` does: the pool children and the beat process get it too. Before the fix a
pool child could die holding the pool's shared inqueue lock, and the main process then waited on that lock
for ever at exit (`intentsite.celery`). Below, that race is also played without processes or signals.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from billiard import get_context, synchronize

from intent.models import DetectionRecord
from intent.services import intent_detect
from intentsite.celery import lock_enter_exception_safe, pool_child_locks_exception_safe
from tests.conftest import wait_for
from tests.intent.test_tracking import detection_runs

MESSAGES = ["what is my balance", "send 20 dollars to my savings", "do i need a visa for japan",
            "what's the exchange rate to euros", "my card got declined"]
STOP_WITHIN_S = 15.0
# Leases and the flush short, so that the fresh worker re-sends at once what the stopped one held. No sync requested
# after logging (ANALYTICS_SYNC_TRIGGER_S=0): these tests are about the records. With it, a sync is due 2 s after each
# batch, so one more task reaches a pool child at the moment of the SIGTERM; once in CI (2 cores, loaded) a pool
# process started after the SIGTERM was still running 16 s later (billiard respawns children that die; one started
# after the group's signal never gets it). Not reproduced in 6 runs on an idle machine; a known limit, see README.
TRACKING_ENV = {"TRACKING_LEASE_S": "3", "TRACKING_FLUSH_AFTER_S": "2", "TRACKING_FLUSH_INTERVAL_S": "2",
                "ANALYTICS_SYNC_TRIGGER_S": "0"}
SHUTDOWN_EXIT = -(256 - signal.SIGTERM)  # what billiard's SIGTERM handler passes to sys.exit in a pool child


# --- The race, without processes: a SIGTERM handler raising just after the lock was taken -----------------


class SignalAfterAcquire:
    """A billiard lock's semaphore whose acquire returns, and then the pending SIGTERM handler raises."""

    def __init__(self, semlock) -> None:
        self.semlock = semlock

    def __enter__(self):
        self.semlock.__enter__()
        raise SystemExit(SHUTDOWN_EXIT)

    def __getattr__(self, name):
        return getattr(self.semlock, name)


class SignalWhileWaiting(SignalAfterAcquire):
    """... whose acquire is interrupted before it gets the lock."""

    def __enter__(self):
        raise SystemExit(SHUTDOWN_EXIT)


def test_billiard_leaves_a_lock_taken_when_the_handler_raises_right_after_the_acquire():
    lock = get_context().Lock()
    semlock = lock._semlock
    lock._semlock = SignalAfterAcquire(semlock)
    with pytest.raises(SystemExit):
        with lock:
            pass
    assert semlock._is_mine(), "billiard's own __enter__ released it: the workaround may no longer be needed"
    semlock.release()


def test_the_exception_safe_enter_releases_a_lock_it_took():
    lock = get_context().Lock()
    semlock = lock._semlock
    lock._semlock = SignalAfterAcquire(semlock)
    with pytest.raises(SystemExit):
        lock_enter_exception_safe(lock)
    assert not semlock._is_mine()
    assert semlock.acquire(False)  # free for the next process
    semlock.release()


def test_the_exception_safe_enter_releases_nothing_it_did_not_take():
    lock = get_context().Lock()
    lock._semlock = SignalWhileWaiting(lock._semlock)
    with pytest.raises(SystemExit):
        lock_enter_exception_safe(lock)  # a release here would raise: the lock is not held

    rlock = get_context().RLock()
    semlock = rlock._semlock
    rlock.acquire()  # held by an outer `with`
    rlock._semlock = SignalAfterAcquire(semlock)
    with pytest.raises(SystemExit):
        lock_enter_exception_safe(rlock)
    assert semlock._is_mine() and semlock._count() == 1  # the outer level stays taken
    semlock.release()


def test_pool_children_take_billiards_locks_with_the_exception_safe_enter(monkeypatch):
    for lock_class in (synchronize.Lock, synchronize.RLock):
        monkeypatch.setattr(lock_class, "__enter__", synchronize.SemLock.__enter__)
    pool_child_locks_exception_safe()  # connected to worker_process_init
    assert synchronize.Lock.__enter__ is lock_enter_exception_safe
    assert synchronize.RLock.__enter__ is lock_enter_exception_safe
    assert synchronize.Semaphore.__enter__ is synchronize.SemLock.__enter__


# --- Real processes ------------------------------------------------------------------------------------


def logged() -> int:
    return DetectionRecord.objects.filter(state=DetectionRecord.State.LOGGED).count()


def detect(count: int) -> list[str]:
    """`count` detections through the service: records committed, their ids handed to the publisher thread."""
    return [str(intent_detect(message=MESSAGES[i % len(MESSAGES)]).request_id) for i in range(count)]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of this process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("beat", [True, False], ids=["with-beat", "without-beat"])
def test_worker_stopped_with_sigterm_mid_load_exits_in_time_and_loses_no_record(
    beat, small_catalog, mlflow_store, start_worker
):
    # given a worker that logged a few hundred detections and keeps logging new ones as they arrive, a few at
    # a time: between batches its pool processes wait on their shared inqueue, as they mostly do in service.
    # Four of them, so that some wait for the inqueue's lock while another holds it (the race needs that; with
    # two, the unfixed worker hung in most stops on a busy machine, in few on an idle one).
    ids = detect(200)
    worker = start_worker(name="stopped", concurrency=4, beat=beat, **TRACKING_ENV)
    deadline = time.monotonic() + 90
    while logged() < len(ids) - 5:
        assert time.monotonic() < deadline, f"{logged()} records logged in 90 s:\n{worker.log()[-3000:]}"
        ids += detect(5)
        time.sleep(0.5)
    ids += detect(5)
    time.sleep(0.3)

    # when its whole process group gets SIGTERM, while requests keep coming
    pgid = worker.popen.pid
    started = time.monotonic()
    worker.kill(signal.SIGTERM)
    ids += detect(20)
    while group_members(pgid) and time.monotonic() - started < STOP_WITHIN_S + 1:
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    left = group_members(pgid)
    if left:
        worker.kill(signal.SIGKILL)
        worker.popen.wait(timeout=10)

    # then every process of it is gone within the limit, after a warm shutdown of the main process
    assert not left and elapsed < STOP_WITHIN_S, (
        f"processes {left} of the worker still ran {elapsed:.1f} s after SIGTERM:\n{worker.log()[-3000:]}"
    )
    assert worker.popen.wait(timeout=1) == 0, worker.log()[-3000:]

    # and a fresh worker (with beat: the flush re-sends what the stopped one held) logs every record once
    start_worker(name="fresh", concurrency=2, beat=True, **TRACKING_ENV)
    wait_for(lambda: logged() == len(ids), timeout=120, interval=0.5, message="every record to be logged")
    request_ids = [run.data.tags["request_id"] for run in detection_runs(mlflow_store)]
    assert sorted(request_ids) == sorted(ids)
