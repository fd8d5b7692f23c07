"""Intent detection (the detector, its LM and breaker, experiments, gap mining, retention) and its MLflow tracking."""

import os
from pathlib import Path

from .base import BASE_DIR, VAR_DIR, env_bool

# --- Intent detection -------------------------------------------------------------------------
# `local` = the offline classifier; anything else is a litellm model name (`openai/gpt-4o-mini`).
INTENT_LM = os.environ.get("INTENT_LM", "local")
INTENT_LM_API_BASE = os.environ.get("INTENT_LM_API_BASE") or None
INTENT_LM_API_KEY = os.environ.get("INTENT_LM_API_KEY") or None
INTENT_LM_TIMEOUT_S = float(os.environ.get("INTENT_LM_TIMEOUT_S", "10"))
INTENT_LM_MAX_TOKENS = int(os.environ.get("INTENT_LM_MAX_TOKENS", "1000"))
# Retries of a failed LM call before the local backend answers instead (0: fall back at once).
INTENT_LM_NUM_RETRIES = int(os.environ.get("INTENT_LM_NUM_RETRIES", "0"))
# DSPy's engine for the LM: auto (native client where it can), litellm, or lm15.
INTENT_LM_ENGINE = os.environ.get("INTENT_LM_ENGINE", "auto")
# LM circuit breaker (one per LM per process): consecutive LM failures that open it; 0 disables the breaker.
INTENT_LM_BREAKER_FAILURES = int(os.environ.get("INTENT_LM_BREAKER_FAILURES", "5"))
# It also opens when more than this share of the last WINDOW calls failed (1 disables this rule).
INTENT_LM_BREAKER_FAILURE_RATE = float(os.environ.get("INTENT_LM_BREAKER_FAILURE_RATE", "0.5"))
# How many of the last LM calls the failure rate is taken over.
INTENT_LM_BREAKER_WINDOW = int(os.environ.get("INTENT_LM_BREAKER_WINDOW", "20"))
# The failure rate counts once the window holds at least this many calls.
INTENT_LM_BREAKER_MIN_CALLS = int(os.environ.get("INTENT_LM_BREAKER_MIN_CALLS", "10"))
# Seconds an open breaker answers from the local backend without calling the LM, before one probe call.
INTENT_LM_BREAKER_COOLDOWN_S = float(os.environ.get("INTENT_LM_BREAKER_COOLDOWN_S", "30"))
# The offline model's sentence encoder (intent/program/local_encoder.py): `minilm-l6-int8` (all-MiniLM-L6-v2 in
# onnxruntime, ~2 ms a message on one core, ~80 MB per process) or `none` (the n-gram model alone, for tiny installs:
# ~0.3 ms, 20 points less out-of-scope recall). Changing it changes the prompt version.
INTENT_LOCAL_ENCODER = os.environ.get("INTENT_LOCAL_ENCODER", "minilm-l6-int8")
# Fitted local models, and the encoder's quantised model file made from its package on first use.
INTENT_MODEL_CACHE_DIR = Path(os.environ.get("INTENT_MODEL_CACHE_DIR", VAR_DIR / "models"))
# Where optimize_intents saves optimized programs (`<prompt_version>.json` for the LM backend,
# `<prompt_version>.joblib` for the local one); activate_prompt_version makes one the active program.
INTENT_PROGRAM_DIR = Path(os.environ.get("INTENT_PROGRAM_DIR", VAR_DIR / "programs"))
# How often (seconds) a process checks whether the catalog or the active prompt version changed.
INTENT_CATALOG_REFRESH_S = float(os.environ.get("INTENT_CATALOG_REFRESH_S", "5"))
# Live prompt experiments (intent.experiments): each process reads the running ones this often (a start, stop or
# rollback reaches every process within it); beat evaluates them (guardrails, the fixed-horizon decision) this often.
INTENT_EXPERIMENTS_REFRESH_S = float(os.environ.get("INTENT_EXPERIMENTS_REFRESH_S", "2"))
# After an experiment or an activation changes, a worker brings MLflow along (the experiment's run, the registry's
# aliases). Off: nothing is queued (the test suite's own process; `manage.py sync_prompt_registry` does it by hand).
TRACKING_FOLLOW_UP_TASKS = os.environ.get("TRACKING_FOLLOW_UP_TASKS", "1") != "0"
EXPERIMENTS_EVALUATE_INTERVAL_S = float(os.environ.get("EXPERIMENTS_EVALUATE_INTERVAL_S", "60"))
# A guardrail rolls a variant back when its limit is below the variant's interval at this confidence (one-sided), with
# at least this many runs, or when the variant is above the limit at the horizon (min_runs_per_variant).
EXPERIMENTS_GUARDRAIL_CONFIDENCE = float(os.environ.get("EXPERIMENTS_GUARDRAIL_CONFIDENCE", "0.99"))
EXPERIMENTS_GUARDRAIL_MIN_RUNS = int(os.environ.get("EXPERIMENTS_GUARDRAIL_MIN_RUNS", "20"))
INTENT_CATALOG_PATH = Path(
    os.environ.get("INTENT_CATALOG_PATH", BASE_DIR / "intent" / "data" / "clinc150" / "data_full.json")
)

# --- MLflow tracking --------------------------------------------------------------------------
MLFLOW_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{BASE_DIR / 'mlflow.db'}")
MLFLOW_EXPERIMENT_NAME = os.environ.get("MLFLOW_EXPERIMENT_NAME", "intent_detection")
# Where runs of a local store (sqlite, path) keep artifacts; a tracking server decides for itself.
MLFLOW_ARTIFACT_ROOT = Path(os.environ.get("MLFLOW_ARTIFACT_ROOT", BASE_DIR / "mlartifacts"))
# Base URL of the MLflow UI, for links to runs in the analytics (`{MLFLOW_UI_URL}/#/experiments/<id>/runs/<id>`);
# empty: no links (`mlflow_url` is null).
MLFLOW_UI_URL = os.environ.get("MLFLOW_UI_URL", "").rstrip("/")
# Fail fast on a dead tracking server: our own retries (with backoff, in the worker) take over.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
INTENT_TRACKING_ENABLED = env_bool("INTENT_TRACKING_ENABLED", True)
# Database-backed MLflow stores take a batch of runs in one transaction (see intent/tracking.py);
# 0 logs every run through MlflowClient, the way an http:// tracking server is always written.
TRACKING_BULK_WRITES = env_bool("TRACKING_BULK_WRITES", True)
# Log the (redacted) message text as a run tag. Off by default: messages are personal data.
INTENT_LOG_MESSAGES = env_bool("INTENT_LOG_MESSAGES", False)
# Store each detection's message, redacted (never raw), next to its detection (`DetectionDetail`): the review queue
# shows it and gap mining reads it. 0 stores none.
INTENT_STORE_MESSAGES = env_bool("INTENT_STORE_MESSAGES", True)
# The share of detections also written as an MLflow trace (spans: the detection, the LM call or the local model,
# template matching), by the worker with the run; decided by the request id.
INTENT_TRACE_SAMPLE_RATE = float(os.environ.get("INTENT_TRACE_SAMPLE_RATE", "1.0"))
# Stored message text is erased this many days after its detection (`purge_expired_data`, daily by beat).
INTENT_MESSAGE_RETENTION_DAYS = int(os.environ.get("INTENT_MESSAGE_RETENTION_DAYS", "30"))
# Detections' MLflow runs older than this many days are deleted through MLflow's API by `purge_expired_data`;
# 0 (the default) keeps them. Must not be shorter than ANALYTICS_RAW_RETENTION_DAYS (a system check says so).
TRACKING_MLFLOW_RETENTION_DAYS = int(os.environ.get("TRACKING_MLFLOW_RETENTION_DAYS", "0"))
# Region (ISO 3166 alpha-2) that redaction assumes for phone numbers written without a +country code.
INTENT_PHONE_REGION = os.environ.get("INTENT_PHONE_REGION", "US")
# A record whose run cannot be logged is retried with backoff for this long, then dead-lettered.
TRACKING_RETRY_WINDOW_S = float(os.environ.get("TRACKING_RETRY_WINDOW_S", "900"))
# The flush re-sends pending records older than this that no worker holds (lost messages).
TRACKING_FLUSH_AFTER_S = float(os.environ.get("TRACKING_FLUSH_AFTER_S", "60"))
TRACKING_FLUSH_INTERVAL_S = float(os.environ.get("TRACKING_FLUSH_INTERVAL_S", "30"))
TRACKING_RECORD_RETENTION_DAYS = int(os.environ.get("TRACKING_RECORD_RETENTION_DAYS", "7"))
# A worker owns a record it is logging for this long; a killed worker's records are free again after.
TRACKING_LEASE_S = float(os.environ.get("TRACKING_LEASE_S", "120"))
# Runs a worker keeps in flight (threads) while writing to an `http://` tracking server, a run being 3 REST calls.
TRACKING_CLIENT_CONCURRENCY = int(os.environ.get("TRACKING_CLIENT_CONCURRENCY", "8"))
# A Celery worker's main process writes a heartbeat this often (seconds); health counts a worker alive for three.
WORKER_HEARTBEAT_S = float(os.environ.get("WORKER_HEARTBEAT_S", "10"))
# Health says `tracking_backlog` (degraded) when the oldest detection waiting for MLflow is older than this.
HEALTH_BACKLOG_MAX_AGE_S = float(os.environ.get("HEALTH_BACKLOG_MAX_AGE_S", "300"))
# GET /metrics (Prometheus) is off until this is set; the scraper then sends it as `Authorization: Bearer <token>`.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
TRACKING_RETRY_BACKOFF_MAX_S = float(os.environ.get("TRACKING_RETRY_BACKOFF_MAX_S", "60"))

# --- Template gaps and retention -------------------------------------------------------------
# Template-gap mining (intent/gaps): candidates are messages out of scope, without a template, or under this
# confidence; past GAPS_SAMPLE_SIZE of them a uniform sample is clustered; beat mines GAPS_DAYS days this often.
GAPS_LOW_CONFIDENCE = float(os.environ.get("GAPS_LOW_CONFIDENCE", "0.7"))
GAPS_SAMPLE_SIZE = int(os.environ.get("GAPS_SAMPLE_SIZE", "10000"))
GAPS_MIN_CLUSTER_SIZE = int(os.environ.get("GAPS_MIN_CLUSTER_SIZE", "8"))
GAPS_MAX_CLUSTERS = int(os.environ.get("GAPS_MAX_CLUSTERS", "50"))
GAPS_KEEP_RUNS = int(os.environ.get("GAPS_KEEP_RUNS", "30"))
GAPS_DAYS = int(os.environ.get("GAPS_DAYS", "30"))
GAPS_MINE_INTERVAL_S = float(os.environ.get("GAPS_MINE_INTERVAL_S", str(24 * 3600)))
# POST .../gaps/mine queues one mining of a period per this many seconds (later asks are answered queued: false).
GAPS_MINE_DEBOUNCE_S = float(os.environ.get("GAPS_MINE_DEBOUNCE_S", "300"))
# Expired data (message text, raw rows, old MLflow runs when asked) goes once a day.
PURGE_INTERVAL_S = float(os.environ.get("PURGE_INTERVAL_S", str(24 * 3600)))
