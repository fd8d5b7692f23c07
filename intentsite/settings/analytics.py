"""Analytics: the ORM mirror of MLflow runs, its sync and rollups, the reports' cache, monitors and SLA lines."""

import os

# --- Analytics (the ORM mirror of MLflow runs) ---------------------------------------------------
# Mirrored raw rows (and stored detection details) are kept this many days; older days keep their daily rollups
# forever, frozen: the sync no longer reads or recomputes them. 0 keeps raw rows forever.
ANALYTICS_RAW_RETENTION_DAYS = int(os.environ.get("ANALYTICS_RAW_RETENTION_DAYS", "90"))
# How often beat runs the sync; each run reads runs newer than the watermark minus the overlap.
ANALYTICS_SYNC_INTERVAL_S = float(os.environ.get("ANALYTICS_SYNC_INTERVAL_S", "60"))
ANALYTICS_SYNC_PAGE_SIZE = int(os.environ.get("ANALYTICS_SYNC_PAGE_SIZE", "10000"))
# Runs read again behind the watermark, each sync: runs logged late (the tracking retry window is 15 min)
# and tags added to a run after it ended are mirrored by the next sync within this window; later ones by
# the reconcile (late runs), `analytics.services.runs_refresh` or `sync_mlflow_runs --full` (late tags).
# Each sync re-reads this window's runs: keep it short when runs arrive fast.
ANALYTICS_SYNC_OVERLAP_S = float(os.environ.get("ANALYTICS_SYNC_OVERLAP_S", "900"))
# How often the whole run-id set is compared with MLflow's (runs removed by `mlflow gc`, restored runs).
ANALYTICS_RECONCILE_INTERVAL_S = float(os.environ.get("ANALYTICS_RECONCILE_INTERVAL_S", "3600"))
# A sync owns its experiment this long, renewed after each page; a killed sync frees it after that.
ANALYTICS_SYNC_LEASE_S = float(os.environ.get("ANALYTICS_SYNC_LEASE_S", "600"))
# auto: read MLflow's tables directly when the store is a database with the known schema, else the
# client's search; `client` or `sql` force one.
ANALYTICS_SYNC_SOURCE = os.environ.get("ANALYTICS_SYNC_SOURCE", "auto")
# Report answers are cached until the next sync finishes (the key holds its time); 0 turns the cache off.
ANALYTICS_CACHE_TIMEOUT_S = float(os.environ.get("ANALYTICS_CACHE_TIMEOUT_S", "3600"))
# The offline evaluation runs (`evaluate_intents`): the beat sync mirrors this experiment too, and
# prompt-analysis shows each prompt version's latest evaluation from the mirror (never MLflow in a request).
ANALYTICS_EVALUATION_EXPERIMENT_NAME = os.environ.get("ANALYTICS_EVALUATION_EXPERIMENT_NAME", "intent_evaluation")
# The free-text context (user role, module, tab) keeps each day's this many most frequent values in the rollups;
# the rest roll up as `other` (the mirrored rows keep every value; a filter on a folded value reads them).
ANALYTICS_ROLLUP_TOP_VALUES = int(os.environ.get("ANALYTICS_ROLLUP_TOP_VALUES", "50"))
# Window rollups (what monitors read): 5-minute buckets kept this many days (windows' edges: the longest window, 7
# days, and a day's window with a week of history), hourly ones this many (drift's reference, the rest of history).
# A window whose first partial hour is older than the 5-minute rows kept loses that partial hour.
ANALYTICS_FINE_ROLLUP_DAYS = float(os.environ.get("ANALYTICS_FINE_ROLLUP_DAYS", "9"))
ANALYTICS_HOURLY_ROLLUP_DAYS = float(os.environ.get("ANALYTICS_HOURLY_ROLLUP_DAYS", "35"))
# A worker that has logged runs asks for a sync of the experiment at most once every this many seconds (the
# beat's sync stays the safety net); such a triggered sync re-reads only this overlap behind its watermark.
ANALYTICS_SYNC_TRIGGER_S = float(os.environ.get("ANALYTICS_SYNC_TRIGGER_S", "2"))
ANALYTICS_SYNC_TRIGGER_OVERLAP_S = float(os.environ.get("ANALYTICS_SYNC_TRIGGER_OVERLAP_S", "60"))
# Monitors: evaluated by beat every this many seconds, and after each sync that changed the mirror.
MONITORS_EVALUATE_INTERVAL_S = float(os.environ.get("MONITORS_EVALUATE_INTERVAL_S", "60"))
# A notification is tried this many times more, with exponential backoff from MONITORS_DELIVERY_BACKOFF_S; a
# channel whose notifications fail MONITORS_CHANNEL_MAX_FAILURES times in a row is disabled.
MONITORS_DELIVERY_RETRIES = int(os.environ.get("MONITORS_DELIVERY_RETRIES", "3"))
MONITORS_DELIVERY_BACKOFF_S = float(os.environ.get("MONITORS_DELIVERY_BACKOFF_S", "10"))
MONITORS_DELIVERY_TIMEOUT_S = float(os.environ.get("MONITORS_DELIVERY_TIMEOUT_S", "10"))
MONITORS_CHANNEL_MAX_FAILURES = int(os.environ.get("MONITORS_CHANNEL_MAX_FAILURES", "5"))
# Links in notifications point at the admin's dashboard on this base URL.
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
# SLA lines of the report: a day meets the SLA when its p95 latency / its error rate is at most this.
ANALYTICS_SLA_P95_MS = float(os.environ.get("ANALYTICS_SLA_P95_MS", "1000"))
ANALYTICS_SLA_ERROR_RATE = float(os.environ.get("ANALYTICS_SLA_ERROR_RATE", "0.01"))
