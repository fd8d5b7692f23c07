"""Benchmark: what a live prompt experiment costs the request.

    python bench/experiments.py [--calls 20000] [--requests 600]

1. The assignment alone (`experiment_assign`: the process's cached running experiments, a sha256 per experiment, an
   HMAC of the subject id), per call, with no experiment running (the baseline: one cache read), with one sticky A/B
   experiment, and with one A/B plus two shadow experiments; interleaved in blocks, medians of the blocks.
2. POST /api/intent/detect (local backend, CLINC150 catalog, in-process Django test client, tracking on) with no
   experiment and with an A/B experiment whose two arms are two real local versions (the model answering now, and
   the same model at another out-of-scope threshold), interleaved in blocks.
Everything lives in a temporary folder. Prints medians and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
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
    "INTENT_PROGRAM_DIR": str(WORK / "programs"),
    "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-only-" + os.urandom(24).hex(),
    "THROTTLE_DETECT_RATE": "100000000/min",
    "INTENT_MODEL_CACHE_DIR": str(REPO / "var" / "models"),  # reuse a fitted model if there is one
    "TRACKING_FOLLOW_UP_TASKS": "0",
    "LOG_LEVEL": "WARNING",
})

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

MESSAGES = [
    "what is my checking balance", "send 200 dollars to my savings", "book me a flight to boston",
    "what's the weather like tomorrow", "how do i say thank you in french", "set an alarm for 7am",
    "my card was declined at the store", "how many vacation days do i have left",
    "tell me a joke", "what is the meaning of life and everything",
]


def _experiments(kind: str, *, control: str, variant: str) -> None:
    """No experiment, one sticky A/B, or one A/B and two shadows (as running)."""
    from intent.experiments.assignment import experiments_live_reset
    from intent.models import Experiment

    Experiment.objects.all().delete()
    if kind != "none":
        Experiment.objects.create(name="ab", status="running", control=control,
                                  variants=[{"name": "strict", "prompt_version": variant, "weight": 0.5}])
    if kind == "ab+2 shadows":
        for name in ("shadow-a", "shadow-b"):
            Experiment.objects.create(name=name, mode="shadow", status="running", control=control,
                                      variants=[{"name": "candidate", "prompt_version": variant, "weight": 0.1}])
    experiments_live_reset()


def assignment(calls: int, *, control: str, variant: str) -> None:
    from intent.experiments.assignment import experiment_assign

    kinds = ("none", "ab", "ab+2 shadows")
    blocks: dict[str, list[float]] = {kind: [] for kind in kinds}
    ids = [uuid.uuid4() for _ in range(1000)]
    subjects = [f"user-{i}" for i in range(1000)]
    per_block = 1000
    for _ in range(max(1, calls // (per_block * len(kinds)))):
        for kind in kinds:
            _experiments(kind, control=control, variant=variant)
            experiment_assign(request_id=ids[0], subject_id=subjects[0])  # the cache read once
            started = time.perf_counter()
            for i in range(per_block):
                experiment_assign(request_id=ids[i], subject_id=subjects[i], current_module="banking")
            blocks[kind].append((time.perf_counter() - started) / per_block * 1e6)
    base = statistics.median(blocks["none"])
    print(f"\nexperiment_assign, µs a call (median of {len(blocks['none'])} blocks of {per_block}):")
    for kind in kinds:
        median = statistics.median(blocks[kind])
        print(f"  {kind:<14} {median:8.2f} µs   ({median / base:.1f}× the baseline, +{median - base:.2f} µs)")


def requests(n: int, *, control: str, variant: str) -> None:
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    user = User.objects.create_user("bench")
    client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    body = [f'{{"message": "{m}", "user_role": "customer", "current_module": "banking", "subject_id": "s{i}"}}'
            for i, m in enumerate(MESSAGES)]
    timings: dict[str, list[float]] = {"none": [], "ab": []}
    for kind in timings:  # warm-up: both arms' detectors built
        _experiments(kind, control=control, variant=variant)
        for i in range(40):
            client.post("/api/intent/detect", body[i % 10], content_type="application/json")
    block = 50
    for start in range(0, n, block * 2):
        for kind in timings:
            _experiments(kind, control=control, variant=variant)
            for i in range(block):
                started = time.perf_counter()
                response = client.post("/api/intent/detect", body[(start + i) % 10], content_type="application/json")
                timings[kind].append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.content
    base = statistics.median(timings["none"])
    print(f"\nPOST /api/intent/detect, ms (median of {len(timings['none'])} requests each, interleaved):")
    for kind, values in timings.items():
        median = statistics.median(values)
        print(f"  {kind:<6} p50 {median:6.3f} ms  ({median / base:.3f}× the baseline, {median - base:+.3f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=30000)
    parser.add_argument("--requests", type=int, default=600)
    args = parser.parse_args()
    print(f"work folder: {WORK}")
    call_command("migrate", verbosity=0)
    call_command("load_intent_catalog", verbosity=0)
    from intent.detectors import detector_get
    from intent.services import prompt_version_register
    from intent.services.prompt_versions import local_prompt_version_create

    control = detector_get()
    prompt_version_register(detector=control)
    variant = local_prompt_version_create(oos_threshold=0.6).version
    assignment(args.calls, control=control.prompt_version, variant=variant)
    requests(args.requests, control=control.prompt_version, variant=variant)


if __name__ == "__main__":
    main()
