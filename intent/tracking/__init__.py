"""MLflow tracking of the intent app, the one place of `intent` that talks to MLflow (names: `intentsite.contract`).

- `payload`: a detection's run as plain JSON, written with the request (to add a metric, tag or param: its
  `Field` in the contract and one line in `run_payload_build`);
- `store`: one `MlflowClient` per process, the experiments by name, the store when it takes bulk writes;
- `client` and `bulk`: the two writers of detection runs (any store; a database store, a batch at a time);
- `feedback`: users' feedback on a detection's run (contract B);
- `experiment_runs`: prompt versions, offline evaluations and optimizations (contract C), live prompt experiments;
- `registry`: prompt versions in MLflow's Prompt and Model Registry (`intent-detector`, aliases);
- `traces`: each detection's trace (spans, tags, the link to its run) and feedback as its assessments;
- `retention`: deleting detection runs and traces past TRACKING_MLFLOW_RETENTION_DAYS.
"""

from .bulk import runs_log_bulk
from .client import run_id_find, run_log
from .experiment_runs import evaluation_metrics, experiment_run_log, prompt_experiment_run_sync, prompt_version_log
from .feedback import run_feedback_log
from .payload import run_payload_build
from .retention import detection_runs_expire
from .store import (
    TrackingPermanentError,
    bulk_store,
    client_concurrency,
    experiment_cache_clear,
    experiment_has_runs,
    experiment_id_get,
    store_init,
    tracking_client,
    tracking_modules_preload,
    tracking_uri_display,
)
from .traces import trace_feedback_log, trace_id_for, traces_log

__all__ = [
    "TrackingPermanentError",
    "bulk_store",
    "client_concurrency",
    "detection_runs_expire",
    "evaluation_metrics",
    "experiment_cache_clear",
    "experiment_has_runs",
    "experiment_id_get",
    "experiment_run_log",
    "prompt_experiment_run_sync",
    "prompt_version_log",
    "run_feedback_log",
    "run_id_find",
    "run_log",
    "run_payload_build",
    "runs_log_bulk",
    "store_init",
    "tracking_client",
    "tracking_modules_preload",
    "trace_feedback_log",
    "trace_id_for",
    "traces_log",
    "tracking_uri_display",
]
