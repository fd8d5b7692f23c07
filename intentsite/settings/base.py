"""Django's own settings (core, security, database, static files, REST API, cache, schema, logging), the
environment helpers the other settings modules use, and what must be set before DSPy, litellm or MLflow load."""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
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
