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
if not PAPER_TRADING_MODE and not env.str("SECRET_KEY", default=""):
    # A key generated on one host would differ on the next: sessions and signatures break, and a
    # live desk must know where its key lives.
    raise ImproperlyConfigured("SECRET_KEY is required when PAPER_TRADING_MODE=false (live trading)")
if DEBUG and not PAPER_TRADING_MODE:
    # Debug pages show settings, SQL and local variables to whoever gets an error.
    raise ImproperlyConfigured("DEBUG=true is refused when PAPER_TRADING_MODE=false (live trading)")
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
    # Brute-force protection of the admin login (and of every authenticate() call).
    "axes",
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
    # Last but one, as django-axes asks: it answers a locked-out login with 429.
    "axes.middleware.AxesMiddleware",
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
# Prepared statements (issue 10, docs/performance.md): PostgreSQL parses and plans a statement
# once per connection instead of on every run; the status read's server CPU fell from ~0.6 ms to
# ~0.15 ms and the token look-up's from ~0.3 to ~0.13. That needs server-side parameter binding
# (Django's default is client-side, which cannot prepare). psycopg prepares a statement once it
# has run five times in a connection (its own default threshold): one-off queries stay unprepared.
# A transaction-pooling proxy (PgBouncer before 1.21) cannot follow prepared statements: set
# DB_PREPARED_STATEMENTS=false behind one.
if env.bool("DB_PREPARED_STATEMENTS", default=True):
    DATABASES["default"]["OPTIONS"].update(server_side_binding=True, prepare_threshold=5)
if DATABASES["default"].get("ENGINE") != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must be a postgres://user@host:port/dbname URL (PostgreSQL only)")
# Django's PostgreSQL backend with a health check that needs no round trip (tinywindow/pgbackend).
DATABASES["default"]["ENGINE"] = "tinywindow.pgbackend"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL: str = resolve_redis_url()
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://")

# --- web security (DESIGN.md "Security"; tested in tests/integration/test_security.py) ----------
# HTTPS: the web is reached over TLS (a proxy in front of gunicorn). Default: on in live mode, off
# in paper mode, where `up` serves plain HTTP on 127.0.0.1. It makes the session and CSRF cookies
# Secure, redirects HTTP to HTTPS (except /health and /metrics, probed inside the network) and
# sends HSTS. `manage.py check --deploy` is clean with the production environment.
HTTPS: bool = env.bool("HTTPS", default=not PAPER_TRADING_MODE)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE: int = env.int("SESSION_COOKIE_AGE", default=8 * 3600)  # one desk shift
SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=HTTPS)
SECURE_REDIRECT_EXEMPT = [r"^health/?$", r"^metrics$"]
# Only when the proxy in front sets X-Forwarded-Proto itself (a client could forge it otherwise).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("TRUST_X_FORWARDED_PROTO",
                                                                           default=False) else None
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=365 * 86400 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
# Preloading is a promise to browser vendors about the whole domain: the domain's owner opts in.
SECURE_HSTS_PRELOAD: bool = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = ["security.W021"]  # HSTS preload: see above
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Request bodies: the API takes small JSON objects; anything bigger is refused with a 400/413
# before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE: int = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=256 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

# django-axes: AXES_FAILURE_LIMIT failed logins for one username from one address lock that pair
# out for AXES_COOLOFF_MINUTES (429). Locking the pair, not the username alone, means nobody can
# lock an operator out of the admin from elsewhere. Addresses come from REMOTE_ADDR only, as for
# the API's roles (a forwarded header can be forged). Attempts are rows in PostgreSQL, shared by
# every gunicorn worker; `python manage.py axes_reset_username NAME` lifts a lockout.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT: int = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_MINUTES", default=15.0) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "tinywindow.permissions.client_address"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False  # its start-up banner on every command; failures and lockouts are still logged
if AXES_FAILURE_LIMIT < 1 or AXES_COOLOFF_TIME <= 0 or SESSION_COOKIE_AGE < 60:
    raise ImproperlyConfigured("AXES_FAILURE_LIMIT and AXES_COOLOFF_MINUTES must be positive, SESSION_COOKIE_AGE "
                               "at least 60")

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


# Seconds a web process may keep an API token's account row (tinywindow.auth_cache: it is dropped
# at once when an account changes; this bounds changes made without the ORM). 0: read it every request.
AUTH_CACHE_SECONDS: float = env.float("AUTH_CACHE_SECONDS", default=60.0)
if not 0 <= AUTH_CACHE_SECONDS <= 3600:
    raise ImproperlyConfigured(f"AUTH_CACHE_SECONDS={AUTH_CACHE_SECONDS} must be between 0 and 3600 seconds")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tinywindow.permissions.TokenAuthentication",  # DRF's, roles read with the token (one query)
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tinywindow.permissions.RolePermission"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "tinywindow.throttling.ContentNegotiation",
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


def _time_limits(var: str, default: str) -> tuple[int, int]:
    """`SOFT/HARD` seconds, e.g. `20/30`: at SOFT the task gets SoftTimeLimitExceeded and cleans
    up (tinywindow/celery.py says what each kind does); at HARD the worker kills the process."""
    raw = env.str(var, default=default).strip()
    soft, _, hard = raw.partition("/")
    if not (soft.isdigit() and hard.isdigit() and 0 < int(soft) < int(hard)):
        raise ImproperlyConfigured(f"environment variable {var}={raw!r} is not SOFT/HARD seconds with SOFT < HARD")
    return int(soft), int(hard)


# Per task kind (docs/reliability.md "Time limits"); every other task has the two limits above.
TICK_TIME_LIMITS = _time_limits("TICK_TIME_LIMITS", "20/30")
EXECUTION_TIME_LIMITS = _time_limits("EXECUTION_TIME_LIMITS", "30/45")
BREAKER_CHECK_TIME_LIMITS = _time_limits("BREAKER_CHECK_TIME_LIMITS", "50/60")
CELERY_TASK_ANNOTATIONS = {
    name: {"soft_time_limit": soft, "time_limit": hard}
    for names, (soft, hard) in (
        (("trading.tasks.tick_agent", "trading.tasks.tick_agents"), TICK_TIME_LIMITS),
        (("trading.tasks.execute_order",), EXECUTION_TIME_LIMITS),
        (("safety.tasks.check_breakers",), BREAKER_CHECK_TIME_LIMITS),
    )
    for name in names
}
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
# Batch ticks (trading/services/ticks.py, docs/scaling.md): agents whose tick_seconds is at least
# AGENT_TICK_BATCH_MIN_SECONDS (0 = never) are ticked AGENT_TICK_BATCH_SIZE per task by the
# dispatch-agent-ticks beat entry instead of one beat entry and one task per agent.
AGENT_TICK_BATCH_MIN_SECONDS: int = env.int("AGENT_TICK_BATCH_MIN_SECONDS", default=60)
AGENT_TICK_BATCH_SIZE: int = env.int("AGENT_TICK_BATCH_SIZE", default=100)
if AGENT_TICK_BATCH_MIN_SECONDS < 0 or AGENT_TICK_BATCH_SIZE < 1:
    raise ImproperlyConfigured("AGENT_TICK_BATCH_MIN_SECONDS must be >= 0 and AGENT_TICK_BATCH_SIZE >= 1")
RISK_SNAPSHOT_SECONDS: int = env.int("RISK_SNAPSHOT_SECONDS", default=60)
# Snapshot thinning (trading/services/snapshots.py, beat every SNAPSHOT_THIN_SECONDS): rows younger
# than SNAPSHOT_KEEP_ALL_DAYS are all kept; older ones keep the first row of each
# SNAPSHOT_THIN_KEEP_SECONDS bucket (hourly). docs/metrics.md explains how performance reads them.
SNAPSHOT_KEEP_ALL_DAYS: int = env.int("SNAPSHOT_KEEP_ALL_DAYS", default=7)
SNAPSHOT_THIN_KEEP_SECONDS: int = env.int("SNAPSHOT_THIN_KEEP_SECONDS", default=3600)
SNAPSHOT_THIN_SECONDS: int = env.int("SNAPSHOT_THIN_SECONDS", default=3600)
# Agent performance (trading/services/performance.py, docs/metrics.md "Agent performance figures").
AGENT_PERFORMANCE_SECONDS: int = env.int("AGENT_PERFORMANCE_SECONDS", default=300)
AGENT_PERFORMANCE_WINDOW_DAYS: int = env.int("AGENT_PERFORMANCE_WINDOW_DAYS", default=30)
AGENT_PERFORMANCE_RETURN_SECONDS: int = env.int("AGENT_PERFORMANCE_RETURN_SECONDS", default=3600)
PERFORMANCE_RISK_FREE_RATE: float = env.float("PERFORMANCE_RISK_FREE_RATE", default=0.0)
if min(SNAPSHOT_KEEP_ALL_DAYS, SNAPSHOT_THIN_KEEP_SECONDS, SNAPSHOT_THIN_SECONDS, AGENT_PERFORMANCE_SECONDS,
       AGENT_PERFORMANCE_WINDOW_DAYS, AGENT_PERFORMANCE_RETURN_SECONDS) < 1:
    raise ImproperlyConfigured("SNAPSHOT_* and AGENT_PERFORMANCE_* settings must be positive")
BREAKER_CHECK_SECONDS: int = env.int("BREAKER_CHECK_SECONDS", default=5)
SYNTHETIC_FEED_SEED: int = env.int("SYNTHETIC_FEED_SEED", default=42)
# The market the paper venue fills at (its last price and candle volume): a feed name as an
# agent's `feed` field takes it. Agents deciding on another feed would trade at prices they never saw.
PAPER_FEED: str = env.str("PAPER_FEED", default="synthetic")
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
# Group commit on the in-database (paper) venue: a delivery of `execute_order` also sends up to
# EXECUTION_BATCH_MAX - 1 other queued `pending` orders in its transaction (1: one at a time).
# Bigger batches hold the trading gate longer (a kill-switch activation waits for the batch).
EXECUTION_BATCH_MAX: int = env.int("EXECUTION_BATCH_MAX", default=32)
if not 1 <= EXECUTION_BATCH_MAX <= 1000:
    raise ImproperlyConfigured(f"EXECUTION_BATCH_MAX must be between 1 and 1000 (got {EXECUTION_BATCH_MAX})")
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

# --- backups (tinywindow/backup.py; docs/reliability.md "Recovery objectives") ------------------
# `manage.py backup` and beat's `backup` schedule (every BACKUP_SECONDS, default queue) write a
# pg_dump into BACKUP_DIR and keep the newest BACKUP_KEEP (96 x 15 min = one day); a dump may run
# BACKUP_TIME_LIMIT seconds. Put BACKUP_DIR on another disk (or sync it off the host).
BACKUP_DIR: Path = Path(env.str("BACKUP_DIR", default=str(VAR_DIR / "backups")))
BACKUP_SECONDS: int = env.int("BACKUP_SECONDS", default=900)
BACKUP_KEEP: int = env.int("BACKUP_KEEP", default=96)
BACKUP_TIME_LIMIT: int = env.int("BACKUP_TIME_LIMIT", default=600)
if min(BACKUP_SECONDS, BACKUP_KEEP, BACKUP_TIME_LIMIT) < 1:
    raise ImproperlyConfigured("BACKUP_SECONDS, BACKUP_KEEP and BACKUP_TIME_LIMIT must be positive")

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
