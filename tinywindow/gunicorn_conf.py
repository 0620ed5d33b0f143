"""Gunicorn settings for the web role: `gunicorn --config python:tinywindow.gunicorn_conf ...`
(used by `manage.py up` and docker/start-web.sh; command-line options still win).

- Logging: gunicorn's own error and access logs go through the same handler and format as
  Django's (LOG_FORMAT=json → JSON lines), see tinywindow/logs.py.
- Metrics: with PROMETHEUS_MULTIPROC_DIR set, a worker that exits is marked dead, so its
  live gauges stop counting (its counters stay in the totals, as they must).

Reads the environment only (no Django import): the master process never loads the app.
"""

from __future__ import annotations

import os

from tinywindow.logs import LOG_FORMATS, logging_config

# A malformed value falls back here; Django's settings then stop the worker with a clear message.
_level = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
if _level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    _level = "INFO"
_format = os.environ.get("LOG_FORMAT", "plain").strip().lower()
if _format not in LOG_FORMATS:
    _format = "plain"

logconfig_dict = logging_config(level=_level, log_format=_format)


def _positive(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


# Concurrency and the database connection budget (docs/reliability.md "Connection budget"): each
# thread of each worker holds at most one PostgreSQL connection (Django keeps one per thread for
# DB_CONN_MAX_AGE), so the web role uses at most WEB_WORKERS × WEB_THREADS connections however
# many clients arrive. Clients beyond the threads wait in the listen backlog (WEB_BACKLOG), not
# in PostgreSQL; anonymous excess is answered 429 by the API throttle.
workers = _positive("WEB_WORKERS", 2)
threads = _positive("WEB_THREADS", 4)
backlog = _positive("WEB_BACKLOG", 2048)
# Access lines: "client method path status bytes duration(µs)"; in JSON they are the message.
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(D)sus'


def child_exit(server, worker) -> None:  # gunicorn's hook signature
    from tinywindow.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def post_worker_init(worker) -> None:  # gunicorn's hook signature: in the worker, the app loaded
    # Load the URLconf (views, DRF, the schema) now rather than at the first request, then take
    # the start-up heap out of the cycle collector's reach: a full collection would stop all of
    # this worker's threads for over 100 ms (tinywindow.heap).
    from django.urls import get_resolver

    from tinywindow.heap import freeze_startup_heap

    get_resolver().url_patterns  # noqa: B018 - imported for its side effect: the views load
    freeze_startup_heap(f"web worker {worker.pid}")
