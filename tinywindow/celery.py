"""The Celery application: queues, routing and the engine's health server option.

Queues (DESIGN.md "Queues and tasks"):
- `safety`     breaker checks, kill-switch actions — consumed by the engine, never behind orders
- `execution`  submit/cancel/query one order; reconcile — acks_late, idempotent by client_order_id
- `strategy`   tick_agent(agent_id) — any number of strategy workers
- `default`    risk snapshots, performance, housekeeping

Time limits: soft/hard per task kind from settings (TICK_TIME_LIMITS, EXECUTION_TIME_LIMITS,
BREAKER_CHECK_TIME_LIMITS, applied as CELERY_TASK_ANNOTATIONS), every other task
CELERY_TASK_SOFT_TIME_LIMIT/CELERY_TASK_TIME_LIMIT; what each task does at them is in
docs/reliability.md "Time limits".
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click
from celery import Celery, bootsteps, signals
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tinywindow.settings")

app = Celery("tinywindow")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes the database connections around every task (a reconnect per
# order, ~5 ms) unless DB_REUSE_MAX is set. Workers handle connections as Django does per
# request instead (celery_signals.db_connections_*: DB_CONN_MAX_AGE, health checks, broken or
# half-finished transactions closed), so the fixup's own counter is set out of reach.
app.conf["CELERY_DB_REUSE_MAX"] = sys.maxsize

app.conf.task_queues = (
    Queue("safety"),
    Queue("execution"),
    Queue("strategy"),
    Queue("default"),
)
app.conf.task_routes = {
    "safety.tasks.*": {"queue": "safety"},
    "trading.tasks.execute_order": {"queue": "execution"},
    "trading.tasks.execute_orders": {"queue": "execution"},
    "trading.tasks.reconcile": {"queue": "execution"},
    "trading.tasks.tick_agent": {"queue": "strategy"},
    "trading.tasks.*": {"queue": "default"},
}
app.autodiscover_tasks()

app.user_options["worker"].add(
    click.Option(
        ["--health-port"],
        type=int,
        default=None,
        help="Serve /health and /metrics for this worker on 127.0.0.1:PORT (the engine uses 8080).",
    )
)
app.user_options["worker"].add(
    click.Option(
        ["--health-host"],
        default="127.0.0.1",
        help="Address for the health server (0.0.0.0 inside containers).",
    )
)


ENGINE_QUEUES = frozenset({"safety", "execution"})


class HealthServerStep(bootsteps.StartStopStep):
    """Runs the engine's HTTP health/metrics server inside the worker's main process."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, health_port=None, health_host="127.0.0.1", **options):
        super().__init__(worker, **options)
        self.port = health_port
        self.host = health_host
        self.server = None

    def start(self, worker):
        if not self.port:
            return
        from tinywindow.health import start_engine_health_server

        # Only a worker on the engine's queues vouches for the engine (the web /health reads that
        # heartbeat); a strategy worker with a health port serves /health and /metrics only.
        queues = worker.app.amqp.queues
        consumed = set(queues.consume_from or queues)  # no -Q: every queue
        self.server = start_engine_health_server(host=self.host, port=self.port, worker_hostname=worker.hostname,
                                                 engine=bool(consumed & ENGINE_QUEUES))

    def stop(self, worker):
        if self.server is not None:
            self.server.shutdown()
            self.server = None


app.steps["worker"].add(HealthServerStep)


@signals.worker_ready.connect
def reconcile_on_engine_start(sender: Any = None, **_: Any) -> None:
    """An engine (a worker consuming `execution`) reconciles as soon as it is up, without waiting
    for beat: orders a crash left behind (pending, never enqueued; submitted, never recorded) are
    repaired at the restart. Never raises: a worker that cannot enqueue still starts, and beat's
    run follows within RECONCILE_SECONDS."""
    queues = sender.app.amqp.queues
    if "execution" not in set(queues.consume_from or queues):  # no -Q: every queue
        return
    try:
        from django.conf import settings

        from trading.tasks import reconcile

        reconcile.apply_async(expires=settings.RECONCILE_SECONDS)
    except Exception as exc:
        logging.getLogger(__name__).error("start-up reconciliation not enqueued: %s", exc)

# Task metrics, the log context of each task, worker heartbeats, and logging from settings.LOGGING.
from tinywindow import celery_signals  # noqa: E402, F401 - connects the receivers
