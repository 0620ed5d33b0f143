"""TinyWindow's Prometheus metrics, all prefixed `tinywindow_` (catalog: docs/metrics.md).

Two kinds:

- Events (counters, histograms) are recorded where they happen, below. Processes that serve
  /metrics for many processes (gunicorn workers, Celery prefork children) run with
  PROMETHEUS_MULTIPROC_DIR set: prometheus_client then writes every sample to files in that
  directory and the exporter sums them, so nothing is lost across processes. There are no
  process-local gauges here on purpose: a gauge set in one process is stale or missing in the
  others (and right after a restart).
- State (kill switch, breakers, equity, queue depth, heartbeats, market-data age) is read from
  Redis and PostgreSQL at scrape time by `tinywindow.collectors`, so every process that serves
  /metrics reports the current value, even right after it started.

`render_latest()` builds a fresh registry per scrape: the multiprocess files (or this
process's registry) plus the scrape-time collectors. Nothing scrape-time is ever registered in
the global registry, so nothing can be registered twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

# No `<name>_created` series: multiprocess mode has none, so a single process should not either
# (the same names whichever way an exporter runs; half the series for counters).
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# --- trading -----------------------------------------------------------------------------------
ORDERS = Counter(
    "tinywindow_orders_total", "Orders by the status they reached.", ["status", "agent", "symbol", "mode"]
)
FILLS = Counter("tinywindow_fills_total", "Fills applied.", ["agent", "symbol", "mode"])
ORDER_REJECTS = Counter("tinywindow_order_rejects_total", "Orders refused, by reason kind.", ["reason"])
TICKS = Counter("tinywindow_ticks_total", "Agent ticks by outcome.", ["agent", "outcome"])
TICK_DURATION = Histogram(
    "tinywindow_tick_duration_seconds", "Time to run one agent tick.", ["agent"], buckets=LATENCY_BUCKETS
)
TICK_TO_FILL = Histogram(
    "tinywindow_tick_to_fill_seconds", "From the tick that decided an order to its first fill.",
    buckets=LATENCY_BUCKETS,
)

# --- venues ------------------------------------------------------------------------------------
API_LATENCY = Histogram(
    "tinywindow_api_latency_seconds", "Venue API call latency.", ["exchange", "endpoint", "outcome"],
    buckets=LATENCY_BUCKETS,
)
API_ERRORS = Counter("tinywindow_api_errors_total", "Venue API errors.", ["exchange", "endpoint", "kind"])

# --- safety ------------------------------------------------------------------------------------
BREAKER_TRIPS = Counter(
    "tinywindow_circuit_breaker_trips_total",
    "Circuit breaker trips (CLOSED or HALF_OPEN to OPEN); scope is the target, or global.",
    ["breaker", "scope"],
)

# --- Celery ------------------------------------------------------------------------------------
TASKS = Counter("tinywindow_tasks_total", "Celery tasks by name and final state.", ["task", "state"])
TASK_DURATION = Histogram(
    "tinywindow_task_duration_seconds", "Celery task run time (prerun to postrun), by task.", ["task"],
    buckets=TASK_BUCKETS,
)

API_TOKEN_CACHE = Counter(
    "tinywindow_api_token_cache_total", "API token authentications by where the account row came from.",
    ["result"],
)


@contextmanager
def api_call(exchange: str, endpoint: str) -> Iterator[None]:
    """Time one venue call: latency with outcome ok/error, and an error count by exception type.

        with metrics.api_call("binance", "create_order"):
            exchange.create_order(...)
    """
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        API_LATENCY.labels(exchange, endpoint, "error").observe(time.perf_counter() - started)
        API_ERRORS.labels(exchange, endpoint, type(exc).__name__).inc()
        raise
    API_LATENCY.labels(exchange, endpoint, "ok").observe(time.perf_counter() - started)


def breaker_labels(name: str) -> tuple[str, str]:
    """(breaker, scope) from a breaker's state name: `price_shock:BTC/USDT` → (price_shock, BTC/USDT)."""
    breaker, _, target = name.partition(":")
    return breaker, target or "global"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render_latest() -> tuple[bytes, str]:
    """The exposition text: every process sharing the multiprocess dir (or this process), plus
    the state read at scrape time. Always the classic text format (0.0.4), which every
    Prometheus version parses."""
    from tinywindow.collectors import ScrapeTimeCollector

    registry = CollectorRegistry()
    if multiprocess_dir():
        prom_multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)  # a registry is a collector; it has no describe(), so no name checks
    registry.register(ScrapeTimeCollector())
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


def mark_process_dead(pid: int) -> None:
    """A gunicorn worker or pool child exited: drop its live-gauge files (counters are kept)."""
    if multiprocess_dir():
        prom_multiprocess.mark_process_dead(pid)
