"""TinyWindow's Prometheus metrics, all prefixed `tinywindow_` (catalog: docs/metrics.md).

Processes that serve /metrics for many processes (gunicorn workers, Celery prefork children)
run with PROMETHEUS_MULTIPROC_DIR set: prometheus_client then writes every sample to files
that the exporter aggregates, so nothing is lost across processes. Gauges therefore declare
how they aggregate (`multiprocess_mode`).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

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
TASKS = Counter("tinywindow_tasks_total", "Celery tasks by name and final state.", ["task", "state"])
API_LATENCY = Histogram(
    "tinywindow_api_latency_seconds", "Venue API call latency.", ["exchange", "endpoint", "outcome"],
    buckets=LATENCY_BUCKETS,
)
API_ERRORS = Counter("tinywindow_api_errors_total", "Venue API errors.", ["exchange", "endpoint", "kind"])
KILL_SWITCH_ACTIVE = Gauge(
    "tinywindow_kill_switch_active", "1 while the kill switch is active.", multiprocess_mode="mostrecent"
)
EQUITY = Gauge("tinywindow_equity", "Portfolio equity at the last snapshot.", multiprocess_mode="mostrecent")
REALIZED_PNL = Gauge("tinywindow_realized_pnl", "Realized PnL at the last snapshot.", multiprocess_mode="mostrecent")
UNREALIZED_PNL = Gauge(
    "tinywindow_unrealized_pnl", "Unrealized PnL at the last snapshot.", multiprocess_mode="mostrecent"
)
GROSS_EXPOSURE = Gauge(
    "tinywindow_gross_exposure", "Gross exposure at the last snapshot.", multiprocess_mode="mostrecent"
)
DRAWDOWN = Gauge("tinywindow_drawdown_ratio", "Drawdown from peak equity (0..1).", multiprocess_mode="mostrecent")
LAST_SNAPSHOT = Gauge(
    "tinywindow_last_snapshot_timestamp_seconds", "Unix time of the last portfolio snapshot.",
    multiprocess_mode="mostrecent",
)


def render_latest() -> tuple[bytes, str]:
    """The exposition text for this process, or for all processes sharing the multiprocess dir."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
