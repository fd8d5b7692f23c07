"""Settings for intentsite: every knob is an environment variable with an embedded default.

The defaults need no server (SQLite database, SQLite-backed Celery broker, MLflow on SQLite);
point `DATABASE_URL`, `CELERY_BROKER_URL` and `MLFLOW_TRACKING_URI` at real servers for the
distributed setup. There are no production-only branches.
"""

import os
from pathlib import Path

import dj_database_url
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("INTENTSITE_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Nothing may leave the machine: litellm's price list and MLflow's telemetry stay local.
# These must be set before dspy, litellm or mlflow are imported anywhere.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DSPY_CACHEDIR", str(VAR_DIR / "dspy_cache"))

# --- Core -------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else from SECRET_KEY_FILE (`make install` writes a random one to
    var/secret_key). Only DEBUG may run on a built-in key: anything else refuses to start without one."""
    key = os.environ.get("SECRET_KEY", "").strip()
    path = Path(os.environ.get("SECRET_KEY_FILE") or VAR_DIR / "secret_key")
    if not key and path.is_file():
        key = path.read_text().strip()
    if key:
        return key
    if DEBUG:
        return "insecure-dev-key-for-debug-only-" + "x" * 24
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"SECRET_KEY is not set: set the SECRET_KEY environment variable (or SECRET_KEY_FILE), or run `make install`, "
        f"which writes a random key to {path}. Only DEBUG=1 runs on a built-in development key.")


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "http://localhost:8000,http://127.0.0.1:8000")

# Behind TLS (what `manage.py check --deploy` asks for): set these in production. Off by default so that
# `make demo` works over plain http on 127.0.0.1.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# A TLS-terminating proxy in front says so with this header; only trust it behind such a proxy.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("SECURE_PROXY_SSL_HEADER", False) else None
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "intent",
    "analytics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "intentsite.urls"
WSGI_APPLICATION = "intentsite.wsgi.application"
ASGI_APPLICATION = "intentsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server, the worker and beat read while one of them writes. A checkpoint every ~40 MB of
    # WAL, not 4 MB: a page of the mirror's sync writes ~20 MB, and its index pages are copied back once, not
    # after every page (bench/sync.py: ~5 % of a full sync's time).
    # IMMEDIATE: a transaction takes the write lock when it begins. A deferred one that reads and then writes
    # (`get_or_create`) fails at once with "database is locked" when another process writes meanwhile: the busy
    # timeout does not apply to a read lock's upgrade. Measured: concurrent feedback posts failed 40-50 % without.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; "
                                        "PRAGMA mmap_size=268435456; PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=10000;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve static files from the apps' folders too, so `runserver` and tests need no collectstatic.
WHITENOISE_USE_FINDERS = True

# A detection request is small; anything past this is refused with 413 before parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DATA_UPLOAD_MAX_MEMORY_SIZE", str(64 * 1024)))

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first so that anonymous requests get 401 with a WWW-Authenticate header.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["intentsite.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["intentsite.renderers.FastJSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "intentsite.exceptions.api_exception_handler",
    # Per user (per IP when anonymous), per view scope; over the rate: 429 with Retry-After. Counted in the default
    # cache: per process with the built-in local-memory cache, shared with CACHE_URL=redis://...
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.ScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "detect": os.environ.get("THROTTLE_DETECT_RATE", "3000/min"),
        "feedback": os.environ.get("THROTTLE_FEEDBACK_RATE", "600/min"),
        "analytics": os.environ.get("THROTTLE_ANALYTICS_RATE", "600/min"),
    },
}

# The cache (report answers, throttle counters): local memory per process by default; `redis://host:6379/1`
# shares it between processes and machines.
CACHE_URL = os.environ.get("CACHE_URL", "")
CACHES = {"default": (
    {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    if CACHE_URL.startswith(("redis://", "rediss://"))
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "intentsite"})}
SPECTACULAR_SETTINGS = {
    "TITLE": "intentsite API",
    "DESCRIPTION": "Intent detection with DSPy, tracked in MLflow, with analytics.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # One name per choice set (monitors' states appear on monitors, alerts and the alerts' filter).
    "ENUM_NAME_OVERRIDES": {"MonitorStateEnum": "analytics.models.monitors.Monitor.State"},
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Swagger UI's assets are served from the sidecar package: no CDN, no network.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

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

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite'}")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Messages a worker process may hold beyond the one it runs: a polling broker (the embedded SQLite
# one) then hands over a batch per poll instead of one message per poll. Nothing depends on these
# messages for durability: the outbox table does.
CELERY_WORKER_PREFETCH_MULTIPLIER = int(os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER", "16"))
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# How long a worker waits for the result of a task whose pool process died before calling it lost (Celery's default:
# 10 s). Results are ignored here (the outbox says what was written), and a worker stopping while pool processes
# die (SIGTERM to its process group, new tasks still arriving) waited this long before it could exit.
CELERY_WORKER_LOST_WAIT = float(os.environ.get("CELERY_WORKER_LOST_WAIT", "2"))
# Two queues: `celery` carries the tracking (one message per detection: a backlog can be thousands deep), and
# `periodic` beat's sync and flush, so that a backlog never holds them past their expiry and starves the mirror.
# A worker started without -Q consumes both (taking from each in turn); `-Q periodic` gives them a worker of
# their own. Which tasks go where: CELERY_TASK_ROUTES (beat's entries name their queue too).
CELERY_TASK_DEFAULT_QUEUE = "celery"
PERIODIC_QUEUE = "periodic"
CELERY_TASK_QUEUES = tuple(Queue(name, Exchange(name), routing_key=name) for name in (CELERY_TASK_DEFAULT_QUEUE, PERIODIC_QUEUE))
CELERY_TASK_ROUTES = {
    "intent.tasks.detections_flush": {"queue": PERIODIC_QUEUE},
    "analytics.tasks.runs_sync_task": {"queue": PERIODIC_QUEUE},
    "analytics.tasks.monitors_evaluate_task": {"queue": PERIODIC_QUEUE},
    "analytics.tasks.alert_deliver_task": {"queue": PERIODIC_QUEUE},
    "intent.tasks.expired_data_purge_task": {"queue": PERIODIC_QUEUE},
    "intent.tasks.gaps_mine_task": {"queue": PERIODIC_QUEUE},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "tracking-flush": {
        "task": "intent.tasks.detections_flush",
        "schedule": TRACKING_FLUSH_INTERVAL_S,
        "options": {"expires": TRACKING_FLUSH_INTERVAL_S, "expire_seconds": TRACKING_FLUSH_INTERVAL_S,
                    "queue": PERIODIC_QUEUE},
    },
}
# django-celery-beat's DatabaseScheduler stores `expire_seconds` and drops `expires`; Celery's own
# scheduler reads `expires`. The analytics entry sets both.
CELERY_BEAT_SCHEDULE["analytics-sync"] = {
    "task": "analytics.tasks.runs_sync_task",
    "schedule": ANALYTICS_SYNC_INTERVAL_S,
    "options": {"expires": ANALYTICS_SYNC_INTERVAL_S, "expire_seconds": ANALYTICS_SYNC_INTERVAL_S,
                "queue": PERIODIC_QUEUE},
}
CELERY_BEAT_SCHEDULE["monitors-evaluate"] = {
    "task": "analytics.tasks.monitors_evaluate_task",
    "schedule": MONITORS_EVALUATE_INTERVAL_S,
    "options": {"expires": MONITORS_EVALUATE_INTERVAL_S, "expire_seconds": MONITORS_EVALUATE_INTERVAL_S,
                "queue": PERIODIC_QUEUE},
}
CELERY_BEAT_SCHEDULE["experiments-evaluate"] = {
    "task": "intent.tasks.experiments_evaluate_task",
    "schedule": EXPERIMENTS_EVALUATE_INTERVAL_S,
    "options": {"expires": EXPERIMENTS_EVALUATE_INTERVAL_S, "expire_seconds": EXPERIMENTS_EVALUATE_INTERVAL_S,
                "queue": PERIODIC_QUEUE},
}
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
CELERY_BEAT_SCHEDULE["gaps-mine"] = {
    "task": "intent.tasks.gaps_mine_task",
    "schedule": GAPS_MINE_INTERVAL_S,
    "options": {"expires": GAPS_MINE_INTERVAL_S, "expire_seconds": GAPS_MINE_INTERVAL_S, "queue": PERIODIC_QUEUE},
}
# Expired data (message text, raw rows, old MLflow runs when asked) goes once a day.
PURGE_INTERVAL_S = float(os.environ.get("PURGE_INTERVAL_S", str(24 * 3600)))
CELERY_BEAT_SCHEDULE["expired-data-purge"] = {
    "task": "intent.tasks.expired_data_purge_task",
    "schedule": PURGE_INTERVAL_S,
    "options": {"expires": PURGE_INTERVAL_S, "expire_seconds": PURGE_INTERVAL_S, "queue": PERIODIC_QUEUE},
}
if CELERY_BROKER_URL.startswith(("redis", "rediss")):
    # An unacknowledged message (its worker died) is delivered again after this long.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT_S", "600"))}
CELERY_TIMEZONE = TIME_ZONE

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "LiteLLM": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "alembic": {"level": "WARNING"},
    },
}
