"""Demo traffic: a month of made-up but realistic detections through the real detection, tracking and feedback paths.

A new user's dashboard is otherwise empty. The messages are CLINC150 `test` utterances of the catalog's intents and
`oos_test` ones (out of scope), sent with a user role, module and tab, at start times spread over the period (a daily
rhythm, quieter weekends, a little growth). A share goes through a detector whose LM cannot be reached (a closed port
on 127.0.0.1: refused at once, nothing leaves the machine), so the local backend answers with `lm_unavailable`, as in
production when the LM is down. A share gets the user's feedback with the dataset's true intent, so accuracy means
something. Runs are written synchronously, in batches, by the worker's own service: no worker is needed.
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction

from intentsite.exceptions import Conflict

from .. import tracking
from ..detectors import detector_get
from ..models import DetectionRecord
from ..program import OUT_OF_SCOPE, IntentDetector, LMSettings
from ..program.circuit import CircuitConfig
from ..program.evaluation import DatasetFormatError, dataset_read
from .detection import intent_detect
from .feedback import detection_feedback_create, detection_feedback_log
from .recording import detection_records_log

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
BATCH = 500  # detections per transaction and per bulk write of their runs
# An OpenAI-compatible LM on a port nothing listens on (9, discard): the connection is refused at once.
# No circuit breaker: the seed sends a month of failures within seconds, which would open it after the first few;
# spread over a month, each failure would have been an `lm_unavailable` of its own.
UNREACHABLE_LM = LMSettings(model="openai/gpt-4o-mini", api_base="http://127.0.0.1:9/v1", api_key="demo",
                            timeout_s=2.0, num_retries=0, circuit=CircuitConfig(failures_to_open=0))
ROLES = {"customer": 70, "agent": 22, "admin": 8}
# A few screens of the app per module (CLINC150's domains); any other module gets GENERIC_TABS.
TABS = {
    "banking": ["accounts", "transfers", "payments", "statements"],
    "credit_cards": ["cards", "rewards", "limits", "disputes"],
    "kitchen_and_dining": ["recipes", "restaurants", "shopping_list"],
    "home": ["devices", "reminders", "calendar"],
    "auto_and_commute": ["vehicle", "commute", "maintenance"],
    "travel": ["trips", "bookings", "documents"],
    "utility": ["tools", "settings"],
    "work": ["schedule", "payroll", "benefits"],
    "small_talk": ["chat"],
    "meta": ["chat", "settings"],
}
GENERIC_TABS = ["overview", "settings", "help"]


class DemoTrafficError(Conflict):
    """The demo traffic cannot be sent (no dataset, no catalog intent in it, tracking off)."""


@dataclass(frozen=True)
class DemoTrafficResult:
    detections: int
    out_of_scope_sent: int  # messages from oos_test
    out_of_scope_detected: int  # detections answered `out_of_scope`
    lm_failures: int  # detections whose LM failed (the local backend answered)
    feedback: int  # feedback written on runs
    runs_written: int  # runs this call wrote (a running worker may write some itself)
    not_written: int  # records left to the worker (MLflow failed, or a worker held them)
    since: datetime
    until: datetime
    seconds: float
    run_ids: list[str]  # of the runs written


def experiment_runs_exist() -> bool:
    """Whether the detection experiment holds any (active) run."""
    return tracking.experiment_has_runs()


@dataclass(frozen=True)
class _Traffic:
    """What the seed sends, drawn up front: which detections are out of scope, go through the failing LM or get
    feedback (exact shares: a small seed still shows each kind), the intents' weights and the start times."""

    detector: IntentDetector
    failing: IntentDetector  # its LM cannot be reached
    in_scope: dict[str, list[str]]  # messages by intent
    out_of_scope: list[str]
    module_of: dict[str, str]  # each intent's module
    modules: list[str]
    oos_indices: set[int]
    lm_indices: set[int]
    feedback_indices: set[int]
    intents: list[str]
    weights: list[float]
    start_times: list[int]


def demo_traffic_seed(
    *, days: int, per_day: int, user, seed: int = 0, lm_share: float = 0.10, oos_share: float = 0.08,
    feedback_share: float = 0.05, now_ms: int | None = None, progress: Callable[[int, int], None] | None = None,
) -> DemoTrafficResult:
    """Send `days` × `per_day` detections whose start times lie in the `days` days before now, write their runs,
    and give a share of them feedback by `user` (who also asked for them). A `seed` always sends the same messages
    with the same context; their start times, drawn apart, follow `now_ms` (default: now)."""
    if not settings.INTENT_TRACKING_ENABLED:
        raise DemoTrafficError("tracking is off (INTENT_TRACKING_ENABLED=0): demo traffic would record nothing")
    started = time.monotonic()
    rng = random.Random(seed)
    total = days * per_day
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    since_ms = now_ms - days * DAY_MS
    traffic = _traffic(rng, total=total, seed=seed, since_ms=since_ms, now_ms=now_ms,
                       shares={"lm": lm_share, "oos": oos_share, "feedback": feedback_share})
    counts = {"oos_detected": 0, "lm_failures": 0, "feedback": 0, "written": 0, "not_written": 0}
    run_ids: list[str] = []
    for batch_start in range(0, total, BATCH):
        batch = range(batch_start, min(total, batch_start + BATCH))
        labels = _detections_send(rng, traffic, batch=batch, user=user, counts=counts)
        run_ids += _runs_write(labels, user=user, counts=counts)
        if progress is not None:
            progress(batch.stop, total)
    return DemoTrafficResult(
        detections=total, out_of_scope_sent=len(traffic.oos_indices), out_of_scope_detected=counts["oos_detected"],
        lm_failures=counts["lm_failures"], feedback=counts["feedback"], runs_written=counts["written"],
        not_written=counts["not_written"], since=_datetime(since_ms), until=_datetime(now_ms),
        seconds=time.monotonic() - started, run_ids=run_ids,
    )


def _traffic(rng: random.Random, *, total: int, seed: int, since_ms: int, now_ms: int,
             shares: dict[str, float]) -> _Traffic:
    detector = detector_get()
    if detector.lm is not None:  # never send thousands of made-up messages to a real (paid) LM
        detector = IntentDetector(catalog=detector.catalog, local_model=detector.local.model)
    failing = IntentDetector(catalog=detector.catalog, local_model=detector.local.model, lm_settings=UNREACHABLE_LM)
    module_of = {intent.name: intent.module for intent in detector.catalog.intents}
    in_scope, out_of_scope = _messages(module_of)
    oos_indices = set(rng.sample(range(total), round(total * shares["oos"])))
    lm_indices = set(rng.sample(range(total), round(total * shares["lm"])))
    feedback_indices = set(rng.sample(range(total), max(1, round(total * shares["feedback"]))
                                      if shares["feedback"] else 0))
    intents = sorted(in_scope)
    rng.shuffle(intents)
    clock = random.Random(f"{seed}:start-times")  # apart: how many draws a time takes depends on `now_ms`
    return _Traffic(
        detector=detector, failing=failing, in_scope=in_scope, out_of_scope=out_of_scope, module_of=module_of,
        modules=sorted({module for module in module_of.values() if module}),
        oos_indices=oos_indices, lm_indices=lm_indices, feedback_indices=feedback_indices, intents=intents,
        weights=[1 / (rank + 1) ** 0.8 for rank in range(len(intents))],  # Zipf-like, as real traffic is
        start_times=sorted(_start_time(clock, since_ms=since_ms, until_ms=now_ms) for _ in range(total)),
    )


def _detections_send(rng: random.Random, traffic: _Traffic, *, batch: range, user, counts: dict) -> dict[str, str]:
    """Detect a batch of messages in one transaction; returns each request id's label ('' when not labelled)."""
    labels: dict[str, str] = {}
    with transaction.atomic():
        for index in batch:
            if index in traffic.oos_indices:
                message, true_intent = rng.choice(traffic.out_of_scope), OUT_OF_SCOPE
            else:
                true_intent = rng.choices(traffic.intents, traffic.weights)[0]
                message = rng.choice(traffic.in_scope[true_intent])
            module = _module(rng, traffic.module_of.get(true_intent, ""), traffic.modules)
            result = intent_detect(
                message=message, user_role=rng.choices(list(ROLES), list(ROLES.values()))[0],
                current_module=module, current_tab=_tab(rng, module), user=user,
                detector=traffic.failing if index in traffic.lm_indices else traffic.detector,
                started_at_ms=traffic.start_times[index],
            )
            labels[str(result.request_id)] = true_intent if index in traffic.feedback_indices else ""
            counts["oos_detected"] += result.detection.intent == OUT_OF_SCOPE
            counts["lm_failures"] += result.detection.fallback_used
    return labels


def _runs_write(labels: dict[str, str], *, user, counts: dict) -> list[str]:
    """Write the batch's runs by the worker's own service, then its feedback; returns the runs' ids."""
    outcome = detection_records_log(request_ids=list(labels))
    counts["written"] += len(outcome.logged)
    counts["not_written"] += len(labels) - len(outcome.logged)
    run_ids = list(DetectionRecord.objects.filter(request_id__in=outcome.logged)
                   .values_list("mlflow_run_id", flat=True))
    labelled = [request_id for request_id, label in labels.items() if label]
    with transaction.atomic():
        for request_id in labelled:
            detection_feedback_create(request_id=uuid.UUID(request_id), expected_intent=labels[request_id], user=user)
    counts["feedback"] += len(detection_feedback_log(request_ids=labelled).logged) if labelled else 0
    return run_ids


def _messages(module_of: dict[str, str]) -> tuple[dict[str, list[str]], list[str]]:
    """CLINC150 `test` utterances of the catalog's intents, by intent, and the `oos_test` ones."""
    path = settings.INTENT_CATALOG_PATH
    try:
        examples = dataset_read(path, split="test")
    except DatasetFormatError as exc:
        raise DemoTrafficError(f"demo traffic needs CLINC150's test split: {exc}") from exc
    in_scope: dict[str, list[str]] = {}
    out_of_scope: list[str] = []
    for example in examples:
        if example.intent == OUT_OF_SCOPE:
            out_of_scope.append(example.message)
        elif example.intent in module_of:
            in_scope.setdefault(example.intent, []).append(example.message)
    if not in_scope or not out_of_scope:
        raise DemoTrafficError(f"{path}: no test utterance of the catalog's intents, or no oos_test; "
                               "load the CLINC150 catalog first (manage.py load_intent_catalog)")
    return in_scope, out_of_scope


def _start_time(rng: random.Random, *, since_ms: int, until_ms: int) -> int:
    """A start time in [since, until): busier in the (UTC) daytime and on weekdays, growing over the period."""
    while True:
        at_ms = rng.randrange(since_ms, until_ms)
        moment = _datetime(at_ms)
        hour = moment.hour + moment.minute / 60
        daytime = 0.12 + math.exp(-(((hour - 14) / 4.5) ** 2))  # quiet at night, peak in the early afternoon
        weekday = 0.55 if moment.weekday() >= 5 else 1.0
        growth = 0.75 + 0.5 * (at_ms - since_ms) / (until_ms - since_ms)
        if rng.random() * 1.12 * 1.25 < daytime * weekday * growth:
            return at_ms


def _module(rng: random.Random, module: str, modules: list[str]) -> str:
    """The intent's own module most of the time; sometimes another screen's, or none."""
    draw = rng.random()
    if module and draw < 0.85:
        return module
    if draw < 0.95 and modules:
        return rng.choice(modules)
    return ""


def _tab(rng: random.Random, module: str) -> str:
    if not module or rng.random() < 0.2:
        return ""
    return rng.choice(TABS.get(module, GENERIC_TABS))


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
