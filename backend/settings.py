"""Settings for Command Center RL, read from environment variables with sane defaults."""
import json
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


DEBUG = env_bool("DEBUG", False)
# The fallback key is for development, tests and management commands only: the web server refuses to start on it
# when DEBUG is off (backend/production.py), and `manage.py check --deploy` flags it.
DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-set-SECRET_KEY"
SECRET_KEY = os.environ.get("SECRET_KEY") or DEVELOPMENT_SECRET_KEY
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# HTTPS, for production behind TLS (README: settings). Off by default so development over plain HTTP works.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
if os.environ.get("SECURE_PROXY_SSL_HEADER"):
    # e.g. "HTTP_X_FORWARDED_PROTO,https": the proxy in front terminates TLS and says so in this header.
    _header, _, _value = os.environ["SECURE_PROXY_SSL_HEADER"].partition(",")
    SECURE_PROXY_SSL_HEADER = (_header.strip(), _value.strip() or "https")

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
    "axes",
    "feedback",
    "rl",
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
    "backend.middleware.RequestMetricsMiddleware",
    "backend.middleware.DatabaseUnavailableMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses a login for an account and address locked out after too many failures.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Login lockout (django-axes): LOGIN_FAILURE_LIMIT wrong passwords for one account from one address lock that pair out
# for LOGIN_LOCKOUT_MINUTES, right password or not; staff unlock in the admin (Axes > Access attempts: delete) or with
# `manage.py axes_reset_username NAME`. Behind a proxy, set AXES_IPWARE_PROXY_COUNT so the client's address is used.
AXES_FAILURE_LIMIT = int(os.environ.get("LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("LOGIN_LOCKOUT_MINUTES", "30")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
if os.environ.get("AXES_IPWARE_PROXY_COUNT"):
    AXES_IPWARE_PROXY_COUNT = int(os.environ["AXES_IPWARE_PROXY_COUNT"])
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]

# One cache for every web worker, so the API's throttle counts hold across processes and restarts: Redis when
# REDIS_URL is set, otherwise a table in the database (created by `migrate`), which needs no other service.
if os.environ.get("REDIS_URL"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["REDIS_URL"]}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "ccrl_cache",
                          "OPTIONS": {"MAX_ENTRIES": 100_000}}}
# /metrics (Prometheus text format) answers only with `Authorization: Bearer <METRICS_TOKEN>` when this is set;
# unset, it answers anyone who reaches it (keep it on the private network).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# A load balancer and Prometheus reach these over plain HTTP on the private network: no redirect to HTTPS.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

ROOT_URLCONF = "backend.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

WSGI_APPLICATION = "backend.wsgi.application"
ASGI_APPLICATION = "backend.asgi.application"

if "DATABASE_URL" in os.environ and not os.environ["DATABASE_URL"].strip():
    raise ImproperlyConfigured("DATABASE_URL is set but empty: unset it for SQLite, or give a database URL.")
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "0")),
        # A kept connection is checked before a request uses it, so one broken by a database restart is replaced
        # instead of failing the request.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the rating UI read while the API writes; IMMEDIATE transactions take the write lock up front, so
    # concurrent writers wait (up to the timeout) instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "feedback:rate"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Writes are throttled per account (feedback/throttling.py); reads and the rating UI's pages are not.
    "DEFAULT_THROTTLE_RATES": {
        "ratings": os.environ.get("THROTTLE_RATINGS", "120/min"),
        "entries": os.environ.get("THROTTLE_ENTRIES", "600/min"),
        "picks": os.environ.get("THROTTLE_PICKS", "600/min"),
    },
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "feedback.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 100,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Command Center RL API",
    "DESCRIPTION": "Scenarios, widget and fixture catalogs, entries (widget picks) and operators' ratings of them.",
    "VERSION": "1.0.0",
    # The schema and its docs page describe who may do what, so they need a signed-in user like the API itself.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "backend.schema_hooks.add_error_responses"],
}

OLLAMA_HOST = os.environ.get("OLLAMA_HOST", "http://127.0.0.1:11434")
# OpenAI-compatible serving engines (RL_SERVING engine llama_cpp or vllm; docs/serving.md): the API's base URL, the
# key the server expects (llama.cpp's and vLLM's --api-key; any string when it has none), and for llama_cpp the models
# file the project writes and `manage.py serve_llama_cpp` runs the server on.
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "no-key")
RL_LLAMA_CPP_MODELS_FILE = Path(os.environ.get("RL_LLAMA_CPP_MODELS_FILE", BASE_DIR / "serving" / "llama_cpp_models.json"))
ENABLE_ONLINE_LEARNING = env_bool("ENABLE_ONLINE_LEARNING", False)
RL_BASE_MODEL = os.environ.get("RL_BASE_MODEL", "")
RL_CHECKPOINT_DIR = Path(os.environ.get("RL_CHECKPOINT_DIR", BASE_DIR / "rl_checkpoints"))
RL_CACHE_DIR = Path(os.environ.get("RL_CACHE_DIR", BASE_DIR / ".cache" / "rl"))
# The base model's scores on each evaluation set, reused by later runs (rl/evaluation/score_cache.py); safe to delete.
RL_BASE_SCORES_DIR = Path(os.environ.get("RL_BASE_SCORES_DIR", RL_CACHE_DIR / "base-scores"))
# PyTorch evaluation (evaluate_model, the gate) with bfloat16 weights (rl.evaluation.backends.evaluation_model) on a CPU
# where bf16 measures faster than fp32 (AMX, AVX512-BF16; rl.core.cpu_precision), else fp32. Off: fp32 everywhere.
# Base and tuned are always scored the same way.
RL_EVALUATION_BF16 = env_bool("RL_EVALUATION_BF16", True)
# JSON objects: training preset fields (rl/core/config.py TrainingConfig) and online-learning fields (OnlineLearningConfig).
RL_TRAINING_OVERRIDES = json.loads(os.environ.get("RL_TRAINING_OVERRIDES") or "{}")
RL_ONLINE_LEARNING = json.loads(os.environ.get("RL_ONLINE_LEARNING") or "{}")
# JSON object: serving fields (rl/core/config.py ServingConfig): A/B candidate and share, timeout, temperature.
RL_SERVING = json.loads(os.environ.get("RL_SERVING") or "{}")
# Whether a new account's ratings train models from the start (its RaterProfile.trusted). Staff can untrust a rater
# in the admin, where each rater's agreement with the majority is shown.
RL_NEW_RATERS_TRUSTED = env_bool("RL_NEW_RATERS_TRUSTED", True)
RL_FEEDBACK_USER = os.environ.get("RL_FEEDBACK_USER", "command-center")
# The rating page offers the picks the serving engine was least sure of first (Entry.confidence, where the engine
# reports log-probabilities), then the rest in catalog order. Off: catalog order.
RL_RATE_LEAST_CONFIDENT_FIRST = env_bool("RL_RATE_LEAST_CONFIDENT_FIRST", False)

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "feedback": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "rl": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # bitsandbytes tries to fetch a CPU 4-bit kernel from the Hugging Face hub when imported and warns on every
        # model load that it could not; nothing here runs 4-bit on a CPU, and the hub is not reachable.
        "bitsandbytes.backends.cpu.ops": {"level": "ERROR"},
    },
}

# Serve static/ directly (no collectstatic needed for the small rating UI); collectstatic still works for production.
WHITENOISE_USE_FINDERS = True
