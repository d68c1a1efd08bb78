"""Tunix RT settings. Every knob comes from the environment and is defined once, here.

See the configuration table in README.md for what each variable does.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

# Lets generic classes (ModelAdmin[Run], Serializer[Any]) be subscripted at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    """The variable's value; unset and empty both mean the default."""
    return os.environ.get(name) or default


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

_INSECURE_DEV_KEY = "django-insecure-tunix-rt-development-only"
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY (or DEBUG=1 for a development-only key)."
        )
    SECRET_KEY = _INSECURE_DEV_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS. TUNIX_HTTPS=1 when users reach the site over HTTPS (directly or through a proxy):
# secure cookies, redirect plain HTTP, HSTS. Behind a TLS-terminating proxy, also set
# TUNIX_PROXY_SSL_HEADER to the header it sets (e.g. X-Forwarded-Proto) so Django knows.
TUNIX_HTTPS = env_bool("TUNIX_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = TUNIX_HTTPS
SECURE_SSL_REDIRECT = env_bool("TUNIX_SSL_REDIRECT", TUNIX_HTTPS)
# Scrapers may speak plain HTTP to the process itself (probes are answered before the
# redirect: runs.health.ProbeMiddleware).
SECURE_REDIRECT_EXEMPT = [r"^metrics$"]
# HSTS starts short: once HTTPS works for every host under the domain, raise it to a year
# (31536000). Browsers remember it; a mistake cannot be taken back quickly.
SECURE_HSTS_SECONDS = env_int("TUNIX_HSTS_SECONDS", 60 if TUNIX_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("TUNIX_HSTS_INCLUDE_SUBDOMAINS", TUNIX_HTTPS)
SECURE_HSTS_PRELOAD = env_bool("TUNIX_HSTS_PRELOAD", TUNIX_HTTPS)
_proxy_ssl_header = env_str("TUNIX_PROXY_SSL_HEADER", "")
if _proxy_ssl_header:
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + _proxy_ssl_header.upper().replace("-", "_"),
        "https",
    )

# Where uploaded datasets and run artifacts live. Paths derived from requests are always
# resolved below these roots (see runs.paths).
VAR_DIR = Path(env_str("TUNIX_VAR_DIR", str(BASE_DIR / "var")))
TUNIX_DATASETS_ROOT = Path(env_str("TUNIX_DATASETS_ROOT", str(VAR_DIR / "datasets")))
TUNIX_ARTIFACTS_ROOT = Path(env_str("TUNIX_ARTIFACTS_ROOT", str(VAR_DIR / "artifacts")))
# Largest artifact the API serves (logs, metrics, small checkpoints); larger ones stay on disk.
TUNIX_ARTIFACT_DOWNLOAD_MAX_BYTES = env_int("TUNIX_ARTIFACT_DOWNLOAD_MAX_BYTES", 16 * 1024 * 1024)

# Execution limits.
# Load shedding (runs/shedding.py): a request that waited longer than this before Django saw it
# is answered 503 with Retry-After (0 turns shedding off).
TUNIX_WEB_MAX_QUEUE_MS = env_int("TUNIX_WEB_MAX_QUEUE_MS", 500)
TUNIX_WEB_RETRY_AFTER_SECONDS = env_int("TUNIX_WEB_RETRY_AFTER_SECONDS", 1, minimum=1)
TUNIX_OUTPUT_MAX_BYTES = env_int("TUNIX_OUTPUT_MAX_BYTES", 10240, minimum=256)
TUNIX_RUN_TIMEOUT_SECONDS = env_int("TUNIX_RUN_TIMEOUT_SECONDS", 3600, minimum=1)
TUNIX_RUN_TIMEOUT_MAX_SECONDS = env_int("TUNIX_RUN_TIMEOUT_MAX_SECONDS", 6 * 3600, minimum=1)
TUNIX_KILL_GRACE_SECONDS = env_int("TUNIX_KILL_GRACE_SECONDS", 5, minimum=0)
# A checkpoint's export to a Hugging Face directory (runs/export.py) is stopped after this long.
TUNIX_EXPORT_TIMEOUT_SECONDS = env_int("TUNIX_EXPORT_TIMEOUT_SECONDS", 1800, minimum=1)
# Try-it samples (runs/sample.py): the longest prompt taken, the most tokens generated, and how
# long a worker lets one sample (load, compile, generate) take before it stops it.
TUNIX_SAMPLE_MAX_PROMPT_CHARS = env_int("TUNIX_SAMPLE_MAX_PROMPT_CHARS", 4000, minimum=1)
TUNIX_SAMPLE_MAX_NEW_TOKENS = env_int("TUNIX_SAMPLE_MAX_NEW_TOKENS", 512, minimum=1)
TUNIX_SAMPLE_TIMEOUT_SECONDS = env_int("TUNIX_SAMPLE_TIMEOUT_SECONDS", 300, minimum=1)
# JAX's persistent compilation cache for samples: a later sample of the same model and shapes
# reads the programs compiled for an earlier one instead of compiling them again (seconds on a
# CPU). Set it empty to turn it off.
TUNIX_SAMPLE_COMPILE_CACHE_DIR = os.environ.get(
    "TUNIX_SAMPLE_COMPILE_CACHE_DIR", str(VAR_DIR / "jax-cache")
)
TUNIX_DATASET_MAX_BYTES = env_int("TUNIX_DATASET_MAX_BYTES", 64 * 1024 * 1024, minimum=1024)
TUNIX_DATASET_MAX_RECORD_BYTES = env_int("TUNIX_DATASET_MAX_RECORD_BYTES", 1024 * 1024, minimum=64)
# Local mode's training command (argv prefix; the run's config path is appended). The default
# is the project's Tunix trainer; a JSON list or a plain space-separated command is accepted.
_trainer_raw = env_str("TUNIX_TRAINER_COMMAND", "")
TUNIX_TRAINER_COMMAND: list[str] | None = (
    (
        json.loads(_trainer_raw)
        if _trainer_raw.lstrip().startswith("[")
        else shlex.split(_trainer_raw)
    )
    if _trainer_raw
    else None
)

# Real models for local training: each catalog model's Hugging Face safetensors checkpoint in
# TUNIX_MODELS_DIR/<org>/<name> on every worker host. TUNIX_MODEL_DOWNLOAD=1 lets a worker with
# network fetch a missing one from the hub into that directory. When the web host sees the same
# directory (one host, or a shared mount: TUNIX_MODELS_DIR_SHARED=1, the default), a local run
# of a model that is not there is refused at submit time instead of failing on the worker.
TUNIX_MODELS_DIR = Path(env_str("TUNIX_MODELS_DIR", str(VAR_DIR / "models")))
TUNIX_MODEL_DOWNLOAD = env_bool("TUNIX_MODEL_DOWNLOAD", False)
TUNIX_MODELS_DIR_SHARED = env_bool("TUNIX_MODELS_DIR_SHARED", True)

# A re-queued training (its worker stopped or was lost) continues from the newest checkpoint of
# its earlier attempts instead of starting over (0: start over).
TUNIX_RESUME_TRAINING = env_bool("TUNIX_RESUME_TRAINING", True)

# How often a running training's reported progress (step, loss) is written to its run, at most.
TUNIX_PROGRESS_SECONDS = env_int("TUNIX_PROGRESS_SECONDS", 1, minimum=1)
# Worker liveness and recovery. A running run heartbeats every TUNIX_HEARTBEAT_SECONDS; the
# reaper (a thread in every qcluster worker, every TUNIX_REAPER_INTERVAL_SECONDS) re-queues a
# run whose heartbeat is older than TUNIX_STALE_AFTER_SECONDS, or fails it with worker_lost once
# it has used TUNIX_RUN_MAX_ATTEMPTS attempts. Pending runs that lost their queue task for
# longer than TUNIX_ORPHAN_AFTER_SECONDS are enqueued again.
TUNIX_HEARTBEAT_SECONDS = env_int("TUNIX_HEARTBEAT_SECONDS", 5, minimum=1)
TUNIX_STALE_AFTER_SECONDS = env_int("TUNIX_STALE_AFTER_SECONDS", 30, minimum=2)
TUNIX_REAPER_INTERVAL_SECONDS = env_int("TUNIX_REAPER_INTERVAL_SECONDS", 10, minimum=1)
TUNIX_ORPHAN_AFTER_SECONDS = env_int("TUNIX_ORPHAN_AFTER_SECONDS", 60, minimum=1)
TUNIX_RUN_MAX_ATTEMPTS = env_int("TUNIX_RUN_MAX_ATTEMPTS", 3, minimum=1)
# Hyperparameter sweeps (runs/services/sweeps.py): the most trials one sweep may ask for, and
# the most it may run at once.
TUNIX_SWEEP_MAX_TRIALS = env_int("TUNIX_SWEEP_MAX_TRIALS", 200, minimum=1)
TUNIX_SWEEP_MAX_CONCURRENCY = env_int("TUNIX_SWEEP_MAX_CONCURRENCY", 16, minimum=1)
# On SIGTERM a cluster lets a running run go on this long, then stops it and re-queues it.
TUNIX_SHUTDOWN_GRACE_SECONDS = env_int("TUNIX_SHUTDOWN_GRACE_SECONDS", 30, minimum=0)
if TUNIX_STALE_AFTER_SECONDS <= TUNIX_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("TUNIX_STALE_AFTER_SECONDS must exceed TUNIX_HEARTBEAT_SECONDS")

if TUNIX_RUN_TIMEOUT_SECONDS > TUNIX_RUN_TIMEOUT_MAX_SECONDS:
    raise ImproperlyConfigured(
        "TUNIX_RUN_TIMEOUT_SECONDS must not exceed TUNIX_RUN_TIMEOUT_MAX_SECONDS"
    )

# API tokens are looked up at most this often per process (0: on every request).
TUNIX_TOKEN_CACHE_SECONDS = env_int("TUNIX_TOKEN_CACHE_SECONDS", 10)

# /metrics: optional bearer token; how often each process publishes its run metrics.
TUNIX_METRICS_TOKEN = env_str("TUNIX_METRICS_TOKEN", "")
TUNIX_METRICS_FLUSH_SECONDS = env_int("TUNIX_METRICS_FLUSH_SECONDS", 10, minimum=1)
# /api/bench/floor, the bench's no-work reference view (bench/run.py); 404 unless on.
TUNIX_BENCH_FLOOR = env_bool("TUNIX_BENCH_FLOOR", False)

# Webhooks on every terminal transition (Standard Webhooks). URLs and secret come from the
# operator, never from a request. The secret is "whsec_" + base64 (as Standard Webhooks tools
# generate it). TUNIX_PUBLIC_URL makes the links in the payload absolute.
TUNIX_WEBHOOK_URLS = env_list("TUNIX_WEBHOOK_URLS", [])
TUNIX_WEBHOOK_SECRET = env_str("TUNIX_WEBHOOK_SECRET", "")
TUNIX_WEBHOOK_TIMEOUT_SECONDS = env_int("TUNIX_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
TUNIX_WEBHOOK_MAX_ATTEMPTS = env_int("TUNIX_WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
TUNIX_WEBHOOK_BACKOFF_SECONDS = env_int("TUNIX_WEBHOOK_BACKOFF_SECONDS", 10, minimum=1)
TUNIX_WEBHOOK_BACKOFF_MAX_SECONDS = env_int("TUNIX_WEBHOOK_BACKOFF_MAX_SECONDS", 3600, minimum=1)
TUNIX_PUBLIC_URL = env_str("TUNIX_PUBLIC_URL", "http://127.0.0.1:8000")
if TUNIX_WEBHOOK_URLS and not TUNIX_WEBHOOK_SECRET.startswith("whsec_"):
    raise ImproperlyConfigured(
        "TUNIX_WEBHOOK_URLS needs TUNIX_WEBHOOK_SECRET of the form whsec_<base64>"
    )
# Webhook targets must be public addresses (not loopback, private networks or cloud metadata),
# checked for every address a name resolves to at each delivery; TUNIX_WEBHOOK_ALLOW_PRIVATE=1
# allows them, e.g. for a receiver inside the same network.
TUNIX_WEBHOOK_ALLOW_PRIVATE = env_bool("TUNIX_WEBHOOK_ALLOW_PRIVATE", False)
for _url in TUNIX_WEBHOOK_URLS:
    if not _url.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"webhook URL must be http(s): {_url!r}")
# A literal private address is refused when the app starts (runs.apps), in every process.

# Logs: one line per event; JSON when TUNIX_LOG_JSON=1 (for log shippers).
TUNIX_LOG_JSON = env_bool("TUNIX_LOG_JSON", False)
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_prometheus",
    "csp",
    "axes",
    # Before django_q: runs' own qcluster command (drain on SIGTERM) takes precedence.
    "runs",
    "django_q",
]

MIDDLEWARE = [
    # Probes first: no host check, no HTTPS redirect, no database work for /healthz.
    "runs.health.ProbeMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # First real work of a request: a shed request costs no session, CSRF or database work.
    "runs.shedding.LoadSheddingMiddleware",
    "runs.monitoring.FlushMiddleware",
    # Before the middleware that checks the Host, and outside URL resolution: under DEBUG it
    # answers what they refuse under /api/ as problem+json instead of a debug page.
    "runs.problems.DebugApiErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # runs.middleware.*: the browser's middleware, which API calls with a token skip. Sessions
    # and CSRF keep Django's own names, which Django's deploy checks look for (and they cost a
    # token call next to nothing: nothing reads the session, DRF's views are CSRF-exempt).
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "runs.middleware.AuthenticationMiddleware",
    "runs.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "runs.middleware.CSPMiddleware",
    "runs.middleware.HtmxMiddleware",
    # Last before metrics: a locked-out login is answered before the view runs.
    "axes.middleware.AxesMiddleware",
    "runs.middleware.PrometheusAfterMiddleware",
]

# Security headers. Pages load scripts and styles from this site only, with no inline script or
# style (htmx's own indicator style is switched off in base.html); nothing may frame them.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Login throttling (django-axes) for the login page, the admin and the API token endpoint: after
# TUNIX_LOGIN_FAILURE_LIMIT failures for one username from one address, that pair is refused
# for TUNIX_LOGIN_COOLOFF_MINUTES, answering 429. A success resets the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("TUNIX_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("TUNIX_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_CALLABLE = "runs.lockout.locked_out"
AXES_VERBOSE = False
# Behind a proxy that sets X-Forwarded-For (TUNIX_TRUST_X_FORWARDED_FOR=1), the client address
# is the entry that proxy appended (the last); otherwise the connection's address.
TUNIX_TRUST_X_FORWARDED_FOR = env_bool("TUNIX_TRUST_X_FORWARDED_FOR", False)
AXES_CLIENT_IP_CALLABLE = "runs.lockout.client_ip"

ROOT_URLCONF = "tunix_rt.urls"

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

WSGI_APPLICATION = "tunix_rt.wsgi.application"

# Database: SQLite file by default (embedded, one machine); PostgreSQL via DATABASE_URL.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'tunix_rt.sqlite3'}")
_db: dict[str, Any] = dict(dj_database_url.parse(DATABASE_URL))
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at BEGIN so two
    # writers queue on the busy timeout instead of failing with "database is locked".
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _db["CONN_MAX_AGE"] = 0
    if _db["NAME"] != ":memory:":
        Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # Persistent connections with health checks; never Django's "pool" option, which forked
    # django-q2 workers would share.
    _db["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60)
    if sys.argv[1:2] == ["runserver"]:
        # runserver serves every request on a new thread and never closes that thread's
        # connection: kept alive, they pile up until PostgreSQL refuses clients. Closing each
        # at the end of its request holds one per request in flight. (`make run` serves with
        # gunicorn, whose fixed threads keep theirs.)
        _db["CONN_MAX_AGE"] = 0
    _db["CONN_HEALTH_CHECKS"] = True
    _db.setdefault("OPTIONS", {})
    _db["OPTIONS"].setdefault("connect_timeout", 5)
    _db["OPTIONS"].pop("pool", None)
else:
    raise ImproperlyConfigured(f"Unsupported database engine in DATABASE_URL: {_db['ENGINE']}")
# django-prometheus' wrappers of the same engines count queries, errors and connections;
# PostgreSQL's, in tunix_rt/postgresql, also checks a kept-alive connection without a round trip.
_db["ENGINE"] = {
    "django.db.backends.postgresql": "tunix_rt.postgresql",
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
}[_db["ENGINE"]]
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "web:run-list"
LOGOUT_REDIRECT_URL = "login"

# Pages refresh live parts this often while a run they show is active.
TUNIX_POLL_SECONDS = env_int("TUNIX_POLL_SECONDS", 4, minimum=1)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Uploads larger than this spool to disk instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header turns anonymous requests into 401, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "runs.api.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "runs.api.renderers.FastJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "runs.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "runs.api.renderers.CachedContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "runs.api.problems.problem_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tunix RT API",
    "DESCRIPTION": "Queue, execute and monitor Tunix training runs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # A run's status and an export's have different values: one enum each, named for what
    # they are rather than by a hash of their values.
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "runs.models.RunStatus.choices",
        "ExportStatusEnum": "runs.models.ExportStatus.choices",
        "SweepStatusEnum": "runs.models.SweepStatus.choices",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "runs.api.schema.problem_responses",
    ],
}

# django-q2: the ORM broker keeps its queue in the default database, so a run and its task
# are written in one transaction.
# The queue task's own limit sits above the run's: the executor kills the training at the run
# timeout, django-q2 only steps in if the worker itself hangs. retry (redelivery of a task that
# was never acknowledged) waits for the longest a task can take, queue wait included; the
# reaper recovers lost runs long before that. runs.checks refuses a configuration where these
# do not hold.
_task_timeout = TUNIX_RUN_TIMEOUT_MAX_SECONDS + TUNIX_KILL_GRACE_SECONDS + 60
Q_CLUSTER: dict[str, Any] = {
    "name": env_str("TUNIX_Q_NAME", "tunix_rt"),
    "orm": "default",
    # The ORM broker with FOR UPDATE SKIP LOCKED claims on PostgreSQL (runs/broker.py).
    "broker_class": "runs.broker.SkipLockedORM",
    "workers": env_int("TUNIX_Q_WORKERS", 2, minimum=1),
    "queue_limit": 1,
    "bulk": 1,
    "poll": float(env_str("TUNIX_Q_POLL", "0.2")),
    "timeout": _task_timeout,
    "retry": 3 * _task_timeout + 60,
    "max_attempts": 3,
    "ack_failures": True,
    # The run row records every outcome; django-q2's Success rows would only duplicate it, and
    # pruning them (save_limit > 0) locks the whole Success table on every task. Failures are
    # still kept for the admin.
    "save_limit": -1,
    "daemonize_workers": False,
    "catch_up": False,
    # Alternative clusters, each its own queue (django-q2 ALT_CLUSTERS): a qcluster started
    # with Q_CLUSTER_NAME=<name> serves only that queue.
    "ALT_CLUSTERS": {},
}
# TUNIX_TRAINING_QUEUE=<name>: local-mode runs (trainings, minutes to hours) go to their own
# queue, served by clusters started as `Q_CLUSTER_NAME=<name> manage.py qcluster` with
# TUNIX_TRAINING_WORKERS workers each. Dry-runs and webhook deliveries stay on the default queue,
# so they never wait behind a training. Empty (the default): one queue for everything.
TUNIX_TRAINING_QUEUE = env_str("TUNIX_TRAINING_QUEUE", "")
if TUNIX_TRAINING_QUEUE:
    if Q_CLUSTER["name"] == TUNIX_TRAINING_QUEUE:
        raise ImproperlyConfigured("TUNIX_TRAINING_QUEUE must differ from TUNIX_Q_NAME")
    Q_CLUSTER["ALT_CLUSTERS"][TUNIX_TRAINING_QUEUE] = {
        "workers": env_int("TUNIX_TRAINING_WORKERS", 1, minimum=1),
    }
# TUNIX_RESOURCE_CLASSES: the resource classes this deployment's workers serve, each with the
# most devices a run of it may ask for ("cpu:1,gpu:8,tpu-v5e:8"; read and checked by
# runs/resources.py, and refused at start by runs.checks when malformed). cpu, which runs that
# ask for nothing belong to, is always served, on the queue above. Every other class has its
# own queue, `<training queue or TUNIX_Q_NAME>-<class>`, served by clusters started as
# `Q_CLUSTER_NAME=<that> manage.py qcluster` on hosts with those devices (one run at a time per
# cluster unless TUNIX_TRAINING_WORKERS says otherwise). A request no class serves is refused.
TUNIX_RESOURCE_CLASSES = env_str("TUNIX_RESOURCE_CLASSES", "cpu:1")
TUNIX_RESOURCE_QUEUE_BASE = TUNIX_TRAINING_QUEUE or Q_CLUSTER["name"]
# A worker host's devices as JSON ([{"platform": "gpu", "kind": "A100", "count": 8}]) instead of
# what JAX lists when qcluster starts: for hosts whose JAX cannot see them then. Empty: detect.
TUNIX_WORKER_DEVICES = env_str("TUNIX_WORKER_DEVICES", "")
for _item in TUNIX_RESOURCE_CLASSES.split(","):
    _class = _item.partition(":")[0].strip()
    if _class and _class != "cpu":
        Q_CLUSTER["ALT_CLUSTERS"][f"{TUNIX_RESOURCE_QUEUE_BASE}-{_class}"] = {
            "workers": env_int("TUNIX_TRAINING_WORKERS", 1, minimum=1),
        }

# Mode "ray" (runs/execution/ray.py; docs/deployment.md): runs train as jobs on an existing Ray
# cluster, whose Jobs API (the dashboard, e.g. http://ray-head:8265) is TUNIX_RAY_ADDRESS.
# Unset: the mode is refused at submit. A job reads its config and writes its artifacts in the
# run's directory, and reads its dataset, at the paths this host uses: TUNIX_SHARED_STORAGE=1
# says the artifacts and datasets roots are mounted at the same paths on every web host, worker
# host and Ray node (NFS, or a GCS/S3 FUSE mount); a Ray address without it is refused here.
TUNIX_RAY_ADDRESS = env_str("TUNIX_RAY_ADDRESS", "")
TUNIX_SHARED_STORAGE = env_bool("TUNIX_SHARED_STORAGE", False)
if TUNIX_RAY_ADDRESS and not TUNIX_SHARED_STORAGE:
    raise ImproperlyConfigured(
        "TUNIX_RAY_ADDRESS needs the artifacts on shared storage: mount TUNIX_ARTIFACTS_ROOT "
        "and TUNIX_DATASETS_ROOT at the same paths on every Ray node (NFS, a GCS/S3 FUSE "
        "mount), then set TUNIX_SHARED_STORAGE=1 (docs/deployment.md)"
    )
# The dashboard as a person's browser reaches it, for the run page's link to a run's Ray job
# (TUNIX_RAY_ADDRESS is what the workers reach, often a cluster-internal name). Empty: that.
TUNIX_RAY_DASHBOARD_URL = env_str("TUNIX_RAY_DASHBOARD_URL", "")
# The interpreter on the Ray nodes that runs the trainer, and where Tunix RT's code is there.
TUNIX_RAY_PYTHON = env_str("TUNIX_RAY_PYTHON", "python")
TUNIX_RAY_PROJECT_DIR = env_str("TUNIX_RAY_PROJECT_DIR", str(BASE_DIR))
# A JSON object merged into every job's Ray runtime_env ({"env_vars": {"HF_TOKEN": "..."}}).
try:
    TUNIX_RAY_RUNTIME_ENV: dict[str, Any] = json.loads(env_str("TUNIX_RAY_RUNTIME_ENV", "{}"))
except ValueError as _exc:
    raise ImproperlyConfigured(f"TUNIX_RAY_RUNTIME_ENV must be JSON: {_exc}") from None
if not isinstance(TUNIX_RAY_RUNTIME_ENV, dict) or not isinstance(
    TUNIX_RAY_RUNTIME_ENV.get("env_vars", {}), dict
):
    raise ImproperlyConfigured("TUNIX_RAY_RUNTIME_ENV must be a JSON object")
# The most of each resource class one Ray job may ask for, as TUNIX_RESOURCE_CLASSES writes it
# ("cpu:16,gpu:8,tpu-v5e:8"; cpu is cpu:1 unless listed): a larger request is refused at
# submit. Empty: anything, which Ray holds until it can place it or its start timeout ends.
TUNIX_RAY_RESOURCE_CLASSES = env_str("TUNIX_RAY_RESOURCE_CLASSES", "")
# A cluster that stops answering while a job runs fails the run (backend_unavailable) after
# this long; the worker keeps heart-beating for the run meanwhile.
TUNIX_RAY_UNREACHABLE_SECONDS = env_int("TUNIX_RAY_UNREACHABLE_SECONDS", 60, minimum=1)

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"()": "runs.logs.KeyValueFormatter"},
        "json": {"()": "runs.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if TUNIX_LOG_JSON else "plain",
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "tunix_rt": {"level": LOG_LEVEL, "propagate": True},
    },
}
