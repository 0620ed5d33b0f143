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
# Access lines: "client method path status bytes duration(µs)"; in JSON they are the message.
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(D)sus'


def child_exit(server, worker) -> None:  # gunicorn's hook signature
    from tinywindow.metrics import mark_process_dead

    mark_process_dead(worker.pid)
