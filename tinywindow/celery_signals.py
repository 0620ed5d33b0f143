"""Celery signal receivers: task metrics, log context, worker heartbeats, logging setup.

Imported by tinywindow/celery.py, so every worker, beat and flower process has them before
Celery starts. Task signals fire in the process that runs the task (a prefork child) or, for
revocations and rejections, in the worker's main process; with PROMETHEUS_MULTIPROC_DIR the
counters of all of them add up in one /metrics.
"""

from __future__ import annotations

import functools
import gc
import inspect
import logging
import logging.config
import os
import time
from typing import Any

import redis
from celery import signals

from tinywindow import logs, metrics
from tinywindow.heap import freeze_startup_heap

logger = logging.getLogger(__name__)

# A worker's heartbeat key outlives a crash by this long (a clean shutdown deletes it): long
# enough for the stale-heartbeat alert to fire, short enough that a scaled-down worker goes.
WORKER_HEARTBEAT_TTL_SECONDS = 3600
CONTEXT_ARGUMENTS = ("agent_id", "order_id")

_started: dict[str, float] = {}
_tokens: dict[str, Any] = {}


# --- logging ------------------------------------------------------------------------------------

@signals.setup_logging.connect
def configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Use settings.LOGGING (LOG_FORMAT, LOG_LEVEL) in workers and beat, not Celery's format.

    Having a receiver here tells Celery not to configure logging itself. The LOG_LEVEL
    variable wins; without it, Celery's `--loglevel` sets the root level.
    """
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    if loglevel and not os.environ.get("LOG_LEVEL"):
        logging.getLogger().setLevel(loglevel)


# --- task metrics and context -------------------------------------------------------------------

@functools.cache
def _signature(task: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(task.run)
    except (TypeError, ValueError):
        return None


def _context_ids(task: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    """agent_id / order_id from the task's call arguments, by parameter name."""
    signature = _signature(task)
    if signature is None:
        return {}
    try:
        bound = signature.bind_partial(*(args or ()), **(kwargs or {}))
    except TypeError:
        return {}
    return {name: bound.arguments[name] for name in CONTEXT_ARGUMENTS if name in bound.arguments}


@signals.task_prerun.connect
def task_started(task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None,
                 **_: Any) -> None:
    if not task_id:
        return
    request = getattr(task, "request", None)
    parent = getattr(request, "parent_id", None)
    root = getattr(request, "root_id", None)
    _started[task_id] = time.perf_counter()
    _tokens[task_id] = logs.bind_context(
        task_id=task_id, task_name=getattr(task, "name", None),
        parent_task_id=parent, root_task_id=root if root and root != task_id else None,
        **_context_ids(task, args, kwargs),
    )


@signals.task_postrun.connect
def task_finished(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    started = _started.pop(task_id, None)
    if started is not None and task is not None:
        metrics.TASK_DURATION.labels(task.name).observe(time.perf_counter() - started)
    token = _tokens.pop(task_id, None)
    if token is not None:
        try:
            logs.reset_context(token)
        except ValueError:  # set in another context (should not happen): start clean
            logs.clear_context()


def _task_name(sender: Any) -> str:
    return getattr(sender, "name", None) or str(sender)


@signals.task_success.connect
def task_succeeded(sender: Any = None, **_: Any) -> None:
    metrics.TASKS.labels(_task_name(sender), "success").inc()


@signals.task_failure.connect
def task_failed(sender: Any = None, **_: Any) -> None:
    metrics.TASKS.labels(_task_name(sender), "failure").inc()


@signals.task_retry.connect
def task_retried(sender: Any = None, **_: Any) -> None:
    metrics.TASKS.labels(_task_name(sender), "retry").inc()


@signals.task_revoked.connect
def task_revoked(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    # An agent's tick that waited longer than its `expires` is dropped: state "expired".
    name = _task_name(sender) if sender is not None else getattr(request, "task", "unknown")
    metrics.TASKS.labels(name, "expired" if expired else "revoked").inc()


@signals.task_rejected.connect
def task_rejected(message: Any = None, **_: Any) -> None:
    headers = getattr(message, "headers", None) or {}
    metrics.TASKS.labels(headers.get("task") or "unknown", "rejected").inc()


@signals.task_unknown.connect
def task_unknown(name: str | None = None, **_: Any) -> None:
    metrics.TASKS.labels(name or "unknown", "unknown").inc()


# --- database connections ----------------------------------------------------------------------

def _eager(task: Any) -> bool:
    return bool(getattr(getattr(task, "request", None), "is_eager", False))


@signals.task_prerun.connect
def db_connections_before_task(task: Any = None, **_: Any) -> None:
    """Keep the worker's connection from task to task, as Django keeps it from request to
    request: close it only when it is broken, past DB_CONN_MAX_AGE, or left mid-transaction."""
    if not _eager(task):
        from django.db import close_old_connections

        close_old_connections()


@signals.task_postrun.connect
def db_connections_after_task(task: Any = None, **_: Any) -> None:
    if _eager(task):
        return
    from django.db import close_old_connections, connections

    from safety.services.gate import trading_gate_forget, trading_gate_leaked

    if trading_gate_leaked():
        # A session-level hold of the trading gate outlived its task (its unlock never ran): close
        # the connection so PostgreSQL releases it, or every kill-switch activation would wait on it.
        logger.error("trading gate still held after task %s: closing the database connection",
                     getattr(task, "name", "?"))
        connections.close_all()
        trading_gate_forget()
    close_old_connections()


# --- worker heartbeats --------------------------------------------------------------------------

def _heartbeat_key(hostname: str) -> str:
    from tinywindow.redis_client import WORKER_HEARTBEAT_KEY

    return WORKER_HEARTBEAT_KEY.format(worker=hostname)


@signals.heartbeat_sent.connect
def worker_heartbeat(sender: Any = None, **_: Any) -> None:
    """Every Celery heartbeat (2 s, worker main process): record it where /metrics can read it."""
    hostname = getattr(getattr(sender, "eventer", None), "hostname", None)
    if not hostname:
        return
    from tinywindow.redis_client import get_redis

    try:
        get_redis().set(_heartbeat_key(hostname), f"{time.time():.3f}", ex=WORKER_HEARTBEAT_TTL_SECONDS)
    except redis.RedisError as exc:
        logger.debug("worker heartbeat not recorded: %s", exc)


@signals.worker_shutdown.connect
def worker_gone(sender: Any = None, **_: Any) -> None:
    """A clean stop: forget the heartbeat so a worker that was scaled away does not alert."""
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    from tinywindow.redis_client import get_redis

    try:
        get_redis().delete(_heartbeat_key(hostname))
    except redis.RedisError as exc:
        logger.debug("worker heartbeat not removed: %s", exc)


# --- garbage collection (tinywindow.heap) -------------------------------------------------------

@signals.worker_before_create_process.connect
def freeze_before_fork(**_: Any) -> None:
    # In the prefork parent, before each child: after the first time the collection is cheap.
    freeze_startup_heap("worker parent, before a pool fork")


@signals.worker_process_init.connect
def report_inherited_freeze(**_: Any) -> None:
    logger.debug("pool process %d: %d objects inherited frozen", os.getpid(), gc.get_freeze_count())


@signals.worker_ready.connect
def freeze_after_start(**_: Any) -> None:
    # Also the worker that runs tasks in its main process (--pool solo/threads) and whatever the
    # main process loaded while its pool started.
    freeze_startup_heap("worker main process, ready")
