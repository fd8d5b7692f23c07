"""Benchmark: what tracking costs the request, and how fast the worker turns records into MLflow runs.

    python bench/tracking_overhead.py [--requests 1000] [--runs 1000]   (--runs 0: requests only)
    INTENT_LOCAL_ENCODER=none python bench/tracking_overhead.py ...          (the n-gram model: the encoder's cost)

1. p50/p99 latency of POST /api/intent/detect (local backend, CLINC150 catalog, in-process Django test
   client) with tracking on (outbox row + Celery publish on the embedded SQLite broker) and off,
   interleaved in blocks so both see the same machine.
2. The resident memory of a fresh process that has built the detector and answered once (a web worker's).
3. Worker ingest: runs/s of the worker's logging path (`detection_records_log`) into a fresh SQLite
   MLflow store, half of the records with their trace (the default, INTENT_TRACE_SAMPLE_RATE=1) and half without,
   against the seed's inline fluent logging (`mlflow.start_run` + 6 tags + 5 params + 5 metrics + `end_run`) on
   the same kind of store, in the same process.
Everything lives in a temporary folder. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WORK = Path(tempfile.mkdtemp(prefix="intentsite-bench-"))
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "intentsite.settings",
    "DATABASE_URL": f"sqlite:///{WORK / 'db.sqlite3'}",
    "CELERY_BROKER_URL": f"sqla+sqlite:///{WORK / 'broker.sqlite'}",
    "MLFLOW_TRACKING_URI": f"sqlite:///{WORK / 'mlflow.db'}",
    "MLFLOW_ARTIFACT_ROOT": str(WORK / "artifacts"),
    "INTENTSITE_VAR_DIR": str(WORK / "var"),
    "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-only-" + os.urandom(24).hex(),
    # one client measuring thousands of calls: not what the throttles are for
    "THROTTLE_DETECT_RATE": "100000000/min", "THROTTLE_ANALYTICS_RATE": "100000000/min",
    "INTENT_MODEL_CACHE_DIR": str(REPO / "var" / "models"),  # reuse a fitted model if there is one
    "LOG_LEVEL": "WARNING",
})

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

MESSAGES = [
    "what is my checking balance", "send 200 dollars to my savings", "book me a flight to boston",
    "what's the weather like tomorrow", "how do i say thank you in french", "set an alarm for 7am",
    "my card was declined at the store", "how many vacation days do i have left",
    "tell me a joke", "what is the meaning of life and everything",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def request_latency(n: int) -> None:
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    user = User.objects.create_user("bench")
    client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    timings: dict[bool, list[float]] = {True: [], False: []}
    body = [f'{{"message": "{m}", "user_role": "customer", "current_module": "banking"}}' for m in MESSAGES]
    for i in range(20):  # warm-up: detector built, broker tables created
        settings.INTENT_TRACKING_ENABLED = bool(i % 2)
        client.post("/api/intent/detect", body[i % 10], content_type="application/json")
    block = 50
    for start in range(0, n, block):
        for tracking_on in (True, False):
            settings.INTENT_TRACKING_ENABLED = tracking_on
            for i in range(block):
                started = time.perf_counter()
                response = client.post("/api/intent/detect", body[(start + i) % 10], content_type="application/json")
                timings[tracking_on].append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.content
    on, off = timings[True], timings[False]
    print(f"POST /api/intent/detect, {len(on)} requests each, in-process:")
    print(f"  tracking off: p50 {statistics.median(off):.3f} ms  p99 {percentile(off, 0.99):.3f} ms")
    print(f"  tracking on : p50 {statistics.median(on):.3f} ms  p99 {percentile(on, 0.99):.3f} ms")
    print(f"  tracking adds {statistics.median(on) - statistics.median(off):+.3f} ms at p50")


def worker_ingest(n: int) -> None:
    from intent.models import DetectionRecord
    from intent.services import detection_records_log

    pending = list(DetectionRecord.objects.filter(state="pending").values_list("request_id", flat=True)[:n])
    ids = [str(x) for x in pending]
    # Half the records without their trace section (what INTENT_TRACE_SAMPLE_RATE=0 writes): runs alone.
    half = len(ids) // 2
    for record in DetectionRecord.objects.filter(request_id__in=pending[half:]):
        record.payload.pop("trace", None)
        record.save(update_fields=["payload"])
    # A worker loads MLflow's modules before it forks, then freezes what it loaded out of the garbage collector's
    # sight (intentsite/celery.py): so does the bench, untimed.
    import gc

    from intent.tracking import tracking_modules_preload

    tracking_modules_preload()
    gc.collect()
    gc.freeze()
    # Batches of 50 of each kind in turn, so that both see the same machine; the first of each untimed (a
    # long-lived worker's first batch pays for first uses: statements compiled, the experiment looked up).
    seconds = {"runs and traces": 0.0, "runs alone": 0.0}
    for start in range(0, half, 50):
        for label, batch in (("runs and traces", ids[start : min(start + 50, half)]),
                             ("runs alone", ids[half + start : half + start + 50])):
            started = time.perf_counter()
            detection_records_log(request_ids=batch)
            if start:
                seconds[label] += time.perf_counter() - started
    rates = {label: (half - 50) / spent for label, spent in seconds.items()}
    assert DetectionRecord.objects.filter(request_id__in=pending, state="logged").count() == len(ids)

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{WORK / 'seed-mlflow.db'}")
    mlflow.set_experiment("seed")
    started = time.perf_counter()
    for _ in range(len(ids)):
        with mlflow.start_run():
            mlflow.set_tags({"user_role": "customer", "current_module": "banking", "current_tab": "",
                             "detected_intent": "balance", "dspy_version": "3.4.1", "prompt_version": "x"})
            mlflow.log_params({"model_name": "local", "message_length": 20, "message_word_count": 4,
                               "requires_workflow": False, "category_source": "database"})
            mlflow.log_metrics({"confidence_score": 0.9, "response_time_ms": 1.0, "template_match_rate": 0.0,
                                "available_workflow_templates": 16, "available_agent_templates": 9})
    seed = len(ids) / (time.perf_counter() - started)
    print(f"MLflow ingest on SQLite, {len(ids)} runs:")
    print(f"  seed's inline fluent logging: {seed:.0f} runs/s ({1000 / seed:.1f} ms/run)")
    for label, ours in rates.items():
        print(f"  worker (detection_records_log), {label}: {ours:.0f} runs/s ({1000 / ours:.1f} ms/run), "
              f"{ours / seed:.1f}x the seed")


def worker_memory() -> None:
    """RSS of a fresh process that does what a web worker does before its first answer: Django set up, the
    detector built from the cached model (load_intent_catalog fitted it), one message detected."""
    import subprocess

    code = (
        "import django; django.setup()\n"
        "from intent.detectors import detector_get\n"
        "from intent.program import DetectionInput\n"
        "detector_get().detect(DetectionInput(message='what is my checking balance'))\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "print(int(status['VmRSS'].split()[0]) // 1024, int(status['VmHWM'].split()[0]) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    rss, peak = out.stdout.split()[-2:]
    print(f"a web process after its first detection: RSS {rss} MB (peak {peak} MB)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    print(f"work folder: {WORK}")
    call_command("migrate", verbosity=0)
    call_command("mlflow_init", verbosity=0)
    call_command("load_intent_catalog", verbosity=0)
    print(f"INTENT_LM={settings.INTENT_LM}, INTENT_LOCAL_ENCODER={settings.INTENT_LOCAL_ENCODER}")
    request_latency(args.requests)
    worker_memory()
    if args.runs:
        worker_ingest(args.runs)


if __name__ == "__main__":
    main()
