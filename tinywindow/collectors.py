"""Metrics computed at scrape time from Redis and PostgreSQL (catalog: docs/metrics.md).

State is not recorded as process-local gauges: a gauge set by the process that changed the
state is stale in every other process that serves /metrics, and missing after a restart.
Reading the state when Prometheus asks gives every exporter (web, engine, strategy workers)
the current value from its first scrape on.

Each part is guarded: when Redis or PostgreSQL cannot answer, that part's metrics are left
out and `tinywindow_scrape_collector_success{collector}` says 0, the scrape itself never fails.
The engine's health server calls this from its own thread, and closes stale database
connections around each request (`close_old_connections`), as Django does around a view.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator

import redis
from prometheus_client.core import GaugeMetricFamily, Metric

from tinywindow.redis_client import (
    BREAKER_STATUS_KEY,
    ENGINE_HEARTBEAT_KEY,
    WORKER_HEARTBEAT_KEY,
    get_redis,
)

logger = logging.getLogger(__name__)

BREAKER_KEY_PREFIX = "tinywindow:circuit_breaker:"
BREAKER_STATE_VALUES = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


# --- safety -------------------------------------------------------------------------------------

def collect_kill_switch() -> Iterator[Metric]:
    from safety.services.kill_switch import kill_switch_state

    view = kill_switch_state()  # Redis mirror, else PostgreSQL; raises when neither answers
    active = _gauge("tinywindow_kill_switch_active", "1 while the kill switch is active, else 0.")
    active.add_metric([], 1 if view.active else 0)
    yield active


def _breaker_state(raw: str | None) -> tuple[int, str] | None:
    """(0/1/2, scope or "") from a breaker key's value: `OPEN`, or JSON {"state": …, "scope": …}."""
    if raw is None:
        return None
    text = raw.strip()
    if text.upper() in BREAKER_STATE_VALUES:
        return BREAKER_STATE_VALUES[text.upper()], ""
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        state = str(data.get("state", "")).upper()
        if state in BREAKER_STATE_VALUES:
            return BREAKER_STATE_VALUES[state], str(data.get("scope") or "")
    return None


def _breaker_states_from_redis(client: redis.Redis) -> dict[tuple[str, str], int]:
    """Every `tinywindow:circuit_breaker:<name>` key holding a state (a string, or a hash with a
    `state` field); `<name>` is `breaker` or `breaker:target`. Other keys under the prefix
    (timestamps, counters) are not states and are skipped."""
    from tinywindow.metrics import breaker_labels

    keys = sorted(k for k in client.scan_iter(match=BREAKER_KEY_PREFIX + "*", count=500) if k != BREAKER_STATUS_KEY)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    types = pipe.execute() if keys else []
    pipe = client.pipeline(transaction=False)
    readable = []
    for key, kind in zip(keys, types, strict=True):
        if kind == "string":
            pipe.get(key)
        elif kind == "hash":
            pipe.hget(key, "state")
        else:
            continue
        readable.append(key)
    found = {}
    for key, raw in zip(readable, pipe.execute() if readable else [], strict=True):
        parsed = _breaker_state(raw)
        if parsed is not None:
            breaker, target_scope = breaker_labels(key[len(BREAKER_KEY_PREFIX):])
            found[(breaker, parsed[1] or target_scope)] = parsed[0]
    return found


def _breaker_states_from_database() -> dict[tuple[str, str], int]:
    """The breakers' authoritative rows (safety.models.CircuitBreakerState), when that app has them."""
    try:
        from safety.models import CircuitBreakerState
    except ImportError:
        return {}
    rows = CircuitBreakerState.objects.values_list("config__name", "target", "state")
    return {(name, target or "global"): BREAKER_STATE_VALUES[state.upper()]
            for name, target, state in rows if state.upper() in BREAKER_STATE_VALUES}


def collect_breakers() -> Iterator[Metric]:
    """Per breaker and scope: PostgreSQL's state rows (a breaker is mirrored to Redis only when it
    changes), plus any breaker that only Redis knows; where both know one, PostgreSQL wins."""
    client = get_redis()
    found = {**_breaker_states_from_redis(client), **_breaker_states_from_database()}
    states = _gauge("tinywindow_circuit_breaker_state",
                    "Circuit breaker state: 0 closed, 1 half-open, 2 open.", ["breaker", "scope"])
    for (breaker, scope), value in sorted(found.items()):
        states.add_metric([breaker, scope], value)
    yield states

    status = _breaker_state(client.get(BREAKER_STATUS_KEY))
    aggregate = _gauge("tinywindow_circuit_breaker_status",
                       "Aggregate of all breakers (tinywindow:circuit_breaker:status): 0 closed, 1 half-open, "
                       "2 open.")
    aggregate.add_metric([], status[0] if status else max(found.values(), default=0))
    yield aggregate


# --- portfolio ----------------------------------------------------------------------------------

SNAPSHOT_FIELDS = (
    ("tinywindow_equity", "equity", "Portfolio equity at the last snapshot (quote currency)."),
    ("tinywindow_realized_pnl", "realized_pnl", "Realized PnL at the last snapshot."),
    ("tinywindow_unrealized_pnl", "unrealized_pnl", "Unrealized PnL at the last snapshot."),
    ("tinywindow_gross_exposure", "gross_exposure", "Gross exposure (sum of |position value|) at the last snapshot."),
    ("tinywindow_net_exposure", "net_exposure", "Net exposure (sum of position values) at the last snapshot."),
    ("tinywindow_drawdown_ratio", "drawdown", "Drawdown from peak equity at the last snapshot (0..1)."),
    ("tinywindow_open_orders", "open_orders", "Open orders at the last snapshot."),
)


def collect_snapshot() -> Iterator[Metric]:
    """The latest `portfolio_snapshots` row: nothing until the first snapshot exists."""
    from trading.models import PortfolioSnapshot

    row = (PortfolioSnapshot.objects.order_by("-created_at")
           .values(*(field for _, field, _ in SNAPSHOT_FIELDS), "created_at").first())
    if row is None:
        return
    for name, field, documentation in SNAPSHOT_FIELDS:
        gauge = _gauge(name, documentation)
        gauge.add_metric([], float(row[field]))
        yield gauge
    last = _gauge("tinywindow_last_snapshot_timestamp_seconds", "Unix time of the last portfolio snapshot.")
    last.add_metric([], row["created_at"].timestamp())
    yield last


# --- market data --------------------------------------------------------------------------------

def collect_market_data() -> Iterator[Metric]:
    """Age of the newest candle a tick saw (tinywindow:market_data:last:<symbol>), for the symbols
    active agents trade: a paused agent's symbol is not stale, it is unused."""
    from safety.services.stats import MARKET_DATA_KEY
    from trading.models import Agent, AgentStatus

    symbols = sorted({s for row in Agent.objects.filter(status=AgentStatus.ACTIVE).values_list("symbols", flat=True)
                      for s in row})
    values = get_redis().mget([MARKET_DATA_KEY.format(symbol=s) for s in symbols]) if symbols else []
    now = time.time()
    age = _gauge("tinywindow_market_data_age_seconds",
                 "Seconds since the close of the newest candle seen for the symbol (absent until a tick saw one).",
                 ["symbol"])
    for symbol, raw in zip(symbols, values, strict=True):
        if raw:
            age.add_metric([symbol], max(0.0, now - float(raw)))
    yield age


# --- Celery -------------------------------------------------------------------------------------

@functools.cache
def _broker_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, decode_responses=True)


def broker_queue_keys(queue: str, transport_options: dict) -> list[str]:
    """The Redis lists kombu's redis transport keeps one queue in: one per priority step
    (`queue`, then `queue<sep><step>` for every non-zero step), under the global key prefix."""
    from kombu.transport.redis import Channel

    steps = transport_options.get("priority_steps", Channel.priority_steps)
    sep = transport_options.get("sep", Channel.sep)
    prefix = transport_options.get("global_keyprefix", Channel.global_keyprefix)
    names = [queue] + [f"{queue}{sep}{step}" for step in sorted(set(steps)) if step]
    return [prefix + name for name in names]


def celery_queue_names() -> list[str]:
    from tinywindow.celery import app

    names = [q.name for q in (app.conf.task_queues or ())]
    default = app.conf.task_default_queue
    return sorted(set(names) | ({default} if default else set()))


def collect_queue_depth() -> Iterator[Metric]:
    from tinywindow.celery import app

    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return  # another broker: its own exporter knows its queues
    options = dict(app.conf.broker_transport_options or {})
    queues = celery_queue_names()
    pipe = _broker_client(url).pipeline(transaction=False)
    layout = []
    for queue in queues:
        keys = broker_queue_keys(queue, options)
        layout.append((queue, len(keys)))
        for key in keys:
            pipe.llen(key)
    lengths = iter(pipe.execute())
    depth = _gauge("tinywindow_queue_depth", "Tasks waiting in the Celery queue (all priorities), not yet "
                   "reserved by a worker.", ["queue"])
    for queue, count in layout:
        depth.add_metric([queue], sum(next(lengths) or 0 for _ in range(count)))
    yield depth


def collect_heartbeats() -> Iterator[Metric]:
    client = get_redis()
    prefix = WORKER_HEARTBEAT_KEY.format(worker="")
    keys = sorted(client.scan_iter(match=prefix + "*", count=500))
    values = client.mget(keys) if keys else []
    workers = _gauge("tinywindow_worker_heartbeat_timestamp_seconds",
                     "Unix time of the last Celery heartbeat of each worker (removed at a clean shutdown).",
                     ["worker"])
    for key, raw in zip(keys, values, strict=True):
        if raw:
            workers.add_metric([key[len(prefix):]], float(raw))
    yield workers
    engine = client.get(ENGINE_HEARTBEAT_KEY)
    if engine:
        gauge = _gauge("tinywindow_engine_heartbeat_timestamp_seconds",
                       "Unix time of the engine health server's last heartbeat (web /health reads it).")
        gauge.add_metric([], float(engine))
        yield gauge


COLLECTORS: dict[str, Callable[[], Iterator[Metric]]] = {
    "kill_switch": collect_kill_switch,
    "circuit_breakers": collect_breakers,
    "portfolio_snapshot": collect_snapshot,
    "market_data": collect_market_data,
    "queue_depth": collect_queue_depth,
    "heartbeats": collect_heartbeats,
}


class ScrapeTimeCollector:
    """A prometheus_client collector (collect() only, so registries never check its names)."""

    def collect(self) -> Iterator[Metric]:
        success = _gauge("tinywindow_scrape_collector_success",
                         "1 when this part of the scrape-time metrics could be read, 0 when it failed.",
                         ["collector"])
        for name, collect in COLLECTORS.items():
            try:
                metrics = list(collect())
            except Exception as exc:  # a scrape reports what it can; it never fails
                logger.warning("metrics: %s not collected: %s: %s", name, type(exc).__name__, exc)
                success.add_metric([name], 0)
                continue
            success.add_metric([name], 1)
            yield from metrics
        yield success
