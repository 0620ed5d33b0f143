"""TinyWindow settings: one module, every value from the environment (django-environ).

See `.env.example` for every variable. Nothing secret has a default that would work in live
mode: live trading refuses to start without an explicit `SECRET_KEY` and exchange credentials.
"""

from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from tinywindow.logs import LOG_FORMATS, logging_config
from tinywindow.runtime import BASE_DIR, resolve_database_url, resolve_redis_url, var_dir

TRUE_WORDS = {"1", "true", "yes", "on", "y", "t"}
FALSE_WORDS = {"0", "false", "no", "off", "n", "f", ""}


class StrictEnv(environ.Env):
    """django-environ, but a malformed value is a clear configuration error, never a guess.

    Plain django-environ reads PAPER_TRADING_MODE=flase as False (live trading!) and raises a
    bare ValueError for DB_CONN_MAX_AGE=abc; here both name the variable and stop.
    """

    def bool(self, var, default=environ.Env.NOTSET):  # noqa: A003 - django-environ's API
        raw = os.environ.get(var)
        if raw is None:
            if default is environ.Env.NOTSET:
                raise ImproperlyConfigured(f"environment variable {var} is required")
            return default
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ImproperlyConfigured(f"environment variable {var}={raw!r} is not a boolean (use true or false)")

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except (ValueError, TypeError) as exc:
            kind = getattr(cast, "__name__", "value")
            raise ImproperlyConfigured(
                f"environment variable {var}={os.environ.get(var)!r} is not a valid {kind}"
            ) from exc


env = StrictEnv()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR: Path = var_dir()

# --- mode -----------------------------------------------------------------------------------
PAPER_TRADING_MODE: bool = env.bool("PAPER_TRADING_MODE", default=True)
# DESIGN.md "Security": unauthenticated writes from loopback are allowed only in paper mode.
ALLOW_LOOPBACK_WRITES: bool = env.bool("ALLOW_LOOPBACK_WRITES", default=PAPER_TRADING_MODE)
DEBUG: bool = env.bool("DEBUG", default=False)


def _networks(raw: list[str]) -> list:
    import ipaddress

    try:
        return [ipaddress.ip_network(item.strip(), strict=False) for item in raw if item.strip()]
    except ValueError as exc:
        raise ImproperlyConfigured(f"LOCAL_NETWORKS has an invalid network: {exc}") from exc


# Networks treated like loopback for the kill-switch/paper-mode exceptions (besides 127/8 and ::1),
# e.g. the docker compose network the host's curl arrives from. Empty by default.
LOCAL_NETWORKS = _networks(env.list("LOCAL_NETWORKS", default=[]))


def _secret_key() -> str:
    configured = env.str("SECRET_KEY", default="")
    if configured:
        return configured
    # Paper/dev convenience: a random key kept in ./var so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except OSError:
        key = secrets.token_urlsafe(50)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(key)
            path.chmod(0o600)
        except OSError:
            pass
        return key


SECRET_KEY = _secret_key()
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_prometheus",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "tinywindow",
    "safety",
    "trading",
    "paper",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "tinywindow.urls"
WSGI_APPLICATION = "tinywindow.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "tinywindow" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # The desk banner (mode, kill switch, open breakers) on every admin page; lazy.
                "tinywindow.context_processors.desk_status",
            ],
        },
    },
]

# --- data -----------------------------------------------------------------------------------
DATABASE_URL: str = resolve_database_url()
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DATABASES = {"default": env.db_url_config(DATABASE_URL)}
except Exception as exc:  # django-environ raises several kinds for a malformed URL
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL ({exc})") from exc
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if os.environ.get("TEST_DATABASE_NAME"):  # set per run by the test plugin, so parallel runs never collide
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int("DB_CONNECT_TIMEOUT", default=5)
if DATABASES["default"].get("ENGINE") != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must be a postgres://user@host:port/dbname URL (PostgreSQL only)")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL: str = resolve_redis_url()
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
try:  # whitenoise warns on every request when the directory is missing (before collectstatic)
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
except OSError:
    pass
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- API ------------------------------------------------------------------------------------
_THROTTLE_PERIODS = ("s", "m", "h", "d")


def _throttle_rate(var: str, default: str) -> str | None:
    """A DRF rate like `600/minute` (or `off`), checked here so a typo stops the start, not a request."""
    raw = env.str(var, default=default).strip()
    if raw.lower() in ("off", "none", ""):
        return None
    number, _, period = raw.partition("/")
    if not number.isdigit() or int(number) <= 0 or not period or period[0] not in _THROTTLE_PERIODS:
        raise ImproperlyConfigured(f"environment variable {var}={raw!r} is not a rate like 600/minute (or off)")
    return raw


REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tinywindow.permissions.RolePermission"],
    # JSON in (the runbook's curls, scripts, Swagger UI): one body format, one set of edge cases.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tinywindow.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "tinywindow.throttling.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    # Throttling (tinywindow.throttling): generous defaults so the runbook, the admin and scripts never
    # meet it; the kill-switch activation is never throttled. Counters live in Redis (the
    # "throttle" cache, shared by every web worker); if Redis is down requests are let through.
    "DEFAULT_THROTTLE_CLASSES": ["tinywindow.throttling.AnonThrottle", "tinywindow.throttling.UserThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": _throttle_rate("API_THROTTLE_ANON", "600/minute"),
        "user": _throttle_rate("API_THROTTLE_USER", "6000/minute"),
    },
    # Anonymous clients are told apart by REMOTE_ADDR only; set this when a reverse proxy adds
    # X-Forwarded-For (never trust a header a client can forge).
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "tinywindow:throttle",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "TinyWindow API",
    "DESCRIPTION": "Operate TinyWindow: agents, orders, positions, kill switch, circuit breakers.\n\n"
    "Authenticate with a token (`Authorization: Token <key>`) or the admin's session. Roles: viewer reads; "
    "operator activates the kill switch, resets breakers, pauses and resumes agents; admin also deactivates "
    "the kill switch, changes limits and creates, changes or deletes agents. From loopback the kill-switch "
    "activation needs no credentials, and in paper mode neither do the other calls. Invalid input is a 400 "
    "with one message list per field; nothing is written.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Several fields are called `mode` or `status`; name each choice set once.
    "ENUM_NAME_OVERRIDES": {
        "KillSwitchModeEnum": "safety.models.KillSwitchMode",
        "TradingModeEnum": "trading.models.TradingMode",
        "DeskModeEnum": ["PAPER", "LIVE"],
        "AgentStatusEnum": "trading.models.AgentStatus",
        "OrderStatusEnum": "trading.order_states.OrderStatus",
        "BreakerStatusEnum": "safety.models.BreakerStatus",
    },
    # Every operation also documents its error answers (400, 401, 403, 404, 429, 503).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tinywindow.api.document_error_responses",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND: str = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=120)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=100)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A visibility timeout longer than any task: with acks_late, an unacked execution task is
# re-delivered only after this, so it must exceed the hard time limit.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- trading & safety -----------------------------------------------------------------------
DEMO_TICK_SECONDS: int = env.int("DEMO_TICK_SECONDS", default=5)
RISK_SNAPSHOT_SECONDS: int = env.int("RISK_SNAPSHOT_SECONDS", default=60)
BREAKER_CHECK_SECONDS: int = env.int("BREAKER_CHECK_SECONDS", default=5)
SYNTHETIC_FEED_SEED: int = env.int("SYNTHETIC_FEED_SEED", default=42)
PAPER_TAKER_FEE_RATE = env.str("PAPER_TAKER_FEE_RATE", default="0.001")
PAPER_MAKER_FEE_RATE = env.str("PAPER_MAKER_FEE_RATE", default="0.0008")
PAPER_BASE_SLIPPAGE_BPS = env.str("PAPER_BASE_SLIPPAGE_BPS", default="2")
# Paper venue realism: the most of the last 1m candle's volume one order takes per matching
# pass (bigger orders fill partly, the rest on later passes), the simulated round trip of a
# venue call, and how often beat runs the matching pass for resting orders.
PAPER_MAX_VOLUME_SHARE = env.str("PAPER_MAX_VOLUME_SHARE", default="0.1")
PAPER_LATENCY_MS: int = env.int("PAPER_LATENCY_MS", default=0)
PAPER_MATCH_SECONDS: int = env.int("PAPER_MATCH_SECONDS", default=1)
# Real exchanges through ccxt (trading/gateways/ccxt.py). Credentials are NOT settings: they
# are read from the environment or Vault only when a gateway is built, so they never sit in
# django.conf.settings (debug pages, diffsettings). EXCHANGE_API_URL points a ccxt exchange
# at another base URL — the local exchange (`manage.py exchange_server`) on 127.0.0.1.
EXCHANGE_API_URL: str = env.str("EXCHANGE_API_URL", default="")
EXCHANGE_RATE_LIMIT_MS: int | None = env.int("EXCHANGE_RATE_LIMIT_MS", default=None)
EXCHANGE_TIMEOUT_MS: int = env.int("EXCHANGE_TIMEOUT_MS", default=10000)
ENGINE_HEARTBEAT_TTL_SECONDS: int = env.int("ENGINE_HEARTBEAT_TTL_SECONDS", default=20)
# Reconciliation (trading/services/reconcile.py): the books against the venues, every
# RECONCILE_SECONDS and when an engine starts. An order the venue does not know, left
# `pending`/`submitted` longer than RECONCILE_STALE_SECONDS (a crash between commit and
# enqueue, or between marking and sending), is sent again; one older than
# RECONCILE_ORDER_MAX_AGE_SECONDS is expired instead (its decision is stale). Venue trades of
# the last RECONCILE_TRADES_LOOKBACK_SECONDS are checked against the orders we placed (keep it
# at most a day: Binance answers one request with at most 24 hours of trades).
RECONCILE_SECONDS: int = env.int("RECONCILE_SECONDS", default=60)
RECONCILE_STALE_SECONDS: int = env.int("RECONCILE_STALE_SECONDS", default=60)
RECONCILE_ORDER_MAX_AGE_SECONDS: int = env.int("RECONCILE_ORDER_MAX_AGE_SECONDS", default=600)
RECONCILE_TRADES_LOOKBACK_SECONDS: int = env.int("RECONCILE_TRADES_LOOKBACK_SECONDS", default=86400)
if RECONCILE_SECONDS < 1 or not 0 < RECONCILE_STALE_SECONDS < RECONCILE_ORDER_MAX_AGE_SECONDS:
    raise ImproperlyConfigured("RECONCILE_SECONDS and RECONCILE_STALE_SECONDS must be positive, and "
                               "RECONCILE_STALE_SECONDS below RECONCILE_ORDER_MAX_AGE_SECONDS (got "
                               f"{RECONCILE_SECONDS}, {RECONCILE_STALE_SECONDS}, {RECONCILE_ORDER_MAX_AGE_SECONDS})")

# --- logging --------------------------------------------------------------------------------
# One config for web, workers, beat and gunicorn (tinywindow/logs.py). LOG_FORMAT=json writes one
# JSON object per line, with task_id/agent_id/order_id, to follow an incident from tick to fill.
LOG_LEVEL: str = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
LOG_FORMAT: str = env.str("LOG_FORMAT", default="plain").strip().lower()
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} is not one of {', '.join(LOG_FORMATS)}")
LOGGING = logging_config(level=LOG_LEVEL, log_format=LOG_FORMAT)

# --- bootstrap --------------------------------------------------------------------------------
ADMIN_USERNAME: str = env.str("ADMIN_USERNAME", default="admin")
ADMIN_PASSWORD: str = env.str("ADMIN_PASSWORD", default="")

# --- notifications ------------------------------------------------------------------------------
WEBHOOK_URL: str = env.str("WEBHOOK_URL", default="")
WEBHOOK_TIMEOUT_SECONDS: int = env.int("WEBHOOK_TIMEOUT_SECONDS", default=5)
WEBHOOK_MAX_RETRIES: int = env.int("WEBHOOK_MAX_RETRIES", default=5)
BREAKER_RECOVERY_SECONDS: int = env.int("BREAKER_RECOVERY_SECONDS", default=60)
KILL_SWITCH_FLATTEN_PARALLELISM: int = env.int("KILL_SWITCH_FLATTEN_PARALLELISM", default=2)
