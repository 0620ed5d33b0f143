"""Metrics and logs as an operator sees them: real Redis, PostgreSQL, Celery workers, HTTP scrapes.

- the scrape-time state (kill switch, breakers, portfolio, market data, queue depth,
  heartbeats) is current in every exporter, also right after it started;
- counters from several processes sharing PROMETHEUS_MULTIPROC_DIR add up in one scrape,
  Celery's prefork children included (tasks_total via the Celery signals);
- LOG_FORMAT=json gives one JSON object per line with the task and agent/order ids;
- docs/metrics.md lists exactly what the exporters serve.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for_worker
from tests.helpers import ROOT, manage, wait_until
from tinywindow.embedded import find_free_port

D = Decimal


# --- helpers ------------------------------------------------------------------------------------

def parse(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


def scrape_django() -> dict:
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


def scrape_url(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse(response.read().decode())


def send(name: str, queue: str, **options):
    from tinywindow.celery import app

    return app.send_task(name, queue=queue, **options)


# --- scrape-time state --------------------------------------------------------------------------

@pytest.mark.django_db
def test_metrics_when_scraped_then_every_scrape_time_part_is_read():
    samples = scrape_django()
    parts = {dict(labels)["collector"]: v for (name, labels), v in samples.items()
             if name == "tinywindow_scrape_collector_success"}
    assert parts == {"kill_switch": 1, "circuit_breakers": 1, "portfolio_snapshot": 1, "market_data": 1,
                     "queue_depth": 1, "heartbeats": 1}
    assert value(samples, "tinywindow_kill_switch_active") == 0
    assert value(samples, "tinywindow_circuit_breaker_status") == 0
    assert value(samples, "tinywindow_queue_depth", queue="safety") == 0


@pytest.mark.django_db
def test_kill_switch_metric_when_engaged_then_1_also_after_redis_lost_its_mirror(redis_client):
    from safety.services.kill_switch import kill_switch_disengage, kill_switch_engage

    kill_switch_engage(mode="HALT_ONLY", reason="metrics test", actor="t", source="test")
    assert value(scrape_django(), "tinywindow_kill_switch_active") == 1
    redis_client.flushdb()  # Redis restarted empty: PostgreSQL still knows
    assert value(scrape_django(), "tinywindow_kill_switch_active") == 1
    kill_switch_disengage(actor="t", source="test", reason="done")
    assert value(scrape_django(), "tinywindow_kill_switch_active") == 0


@pytest.mark.django_db
def test_breaker_metrics_when_state_keys_in_redis_then_one_series_per_breaker_and_scope(redis_client):
    prefix = "tinywindow:circuit_breaker:"
    redis_client.set(prefix + "daily_loss", "OPEN")
    redis_client.set(prefix + "price_shock:BTC/USDT", "HALF_OPEN")
    redis_client.set(prefix + "consecutive_losses:7", "CLOSED")
    redis_client.set(prefix + "custom", json.dumps({"state": "OPEN", "scope": "exchange:binance"}))
    redis_client.hset(prefix + "hashed", mapping={"state": "HALF_OPEN"})
    redis_client.set(prefix + "daily_loss:opened_at", "1700000000")  # not a state: ignored
    redis_client.set(prefix + "status", "OPEN")
    samples = scrape_django()
    states = {tuple(sorted(dict(labels).items())): v for (name, labels), v in samples.items()
              if name == "tinywindow_circuit_breaker_state"}
    assert states == {
        (("breaker", "daily_loss"), ("scope", "global")): 2,
        (("breaker", "price_shock"), ("scope", "BTC/USDT")): 1,
        (("breaker", "consecutive_losses"), ("scope", "7")): 0,
        (("breaker", "custom"), ("scope", "exchange:binance")): 2,
        (("breaker", "hashed"), ("scope", "global")): 1,
    }
    assert value(samples, "tinywindow_circuit_breaker_status") == 2


@pytest.mark.django_db
def test_breaker_metrics_when_real_breakers_mirrored_then_reported():
    from safety.services.breakers import breakers_check, breakers_ensure_defaults, breakers_mirror

    breakers_ensure_defaults()
    breakers_check()  # creates the states
    breakers_mirror()  # what the engine does on every change and every heartbeat
    samples = scrape_django()
    breakers = {dict(labels)["breaker"] for (name, labels), _ in samples.items()
                if name == "tinywindow_circuit_breaker_state"}
    assert {"daily_loss", "drawdown", "reject_rate"} <= breakers
    assert value(samples, "tinywindow_circuit_breaker_state", breaker="daily_loss", scope="global") == 0


@pytest.mark.django_db
def test_portfolio_metrics_when_snapshot_taken_then_the_latest_row_is_reported(agent, fixed_price_feed):
    from trading.services.snapshots import portfolio_snapshot_take

    assert "tinywindow_equity" not in names(scrape_django())  # no snapshot yet: nothing made up
    snapshot = portfolio_snapshot_take()
    samples = scrape_django()
    assert value(samples, "tinywindow_equity") == pytest.approx(float(snapshot.equity))
    assert value(samples, "tinywindow_drawdown_ratio") == pytest.approx(float(snapshot.drawdown))
    assert value(samples, "tinywindow_gross_exposure") == pytest.approx(float(snapshot.gross_exposure))
    assert value(samples, "tinywindow_last_snapshot_timestamp_seconds") == pytest.approx(
        snapshot.created_at.timestamp())


@pytest.mark.django_db
def test_market_data_age_when_ticks_saw_candles_then_reported_for_active_agents_symbols(agent):
    from safety.services.stats import market_data_seen
    from tests.factories import make_agent
    from trading.models import Agent

    paused = make_agent(symbols=["ETH/USDT"])
    Agent.objects.filter(pk=paused.pk).update(status="paused")
    now = time.time()
    market_data_seen(symbol="BTC/USDT", candle_close_ts=now - 30)
    market_data_seen(symbol="ETH/USDT", candle_close_ts=now - 30)
    samples = scrape_django()
    assert value(samples, "tinywindow_market_data_age_seconds", symbol="BTC/USDT") == pytest.approx(30, abs=5)
    assert value(samples, "tinywindow_market_data_age_seconds", symbol="ETH/USDT") is None  # nobody trades it


@pytest.mark.django_db
def test_queue_depth_when_tasks_wait_then_every_priority_list_is_counted():
    from tinywindow.celery import app

    for priority in (None, 5, 9):  # kombu keeps each priority step in its own Redis list
        send("trading.tasks.tick_agent", "strategy", kwargs={"agent_id": 1}, priority=priority)
    for _ in range(2):
        send("trading.tasks.take_portfolio_snapshot", "default")
    samples = scrape_django()
    assert value(samples, "tinywindow_queue_depth", queue="strategy") == 3
    assert value(samples, "tinywindow_queue_depth", queue="default") == 2
    assert value(samples, "tinywindow_queue_depth", queue="execution") == 0
    with app.connection_for_read() as conn:  # kombu's own count agrees
        assert conn.default_channel.queue_declare("strategy", passive=True).message_count == 3


# --- several processes --------------------------------------------------------------------------

def _count_in_other_process(env: dict[str, str], agent: str) -> None:
    code = ("from tinywindow import metrics\n"
            f"metrics.ORDERS.labels('executed', {agent!r}, 'BTC/USDT', 'paper').inc()\n"
            "metrics.ORDERS.labels('executed', 'both', 'BTC/USDT', 'paper').inc()\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)


@pytest.mark.django_db(transaction=True)
def test_metrics_when_two_processes_count_then_one_engine_scrape_shows_both(worker_env, start_worker):
    from safety.services.kill_switch import kill_switch_engage

    _count_in_other_process(worker_env, "proc-a")
    _count_in_other_process(worker_env, "proc-b")
    kill_switch_engage(mode="HALT_ONLY", reason="before the engine starts", actor="t", source="test")
    port = find_free_port()
    wait_for_worker(start_worker("safety,execution", name="engine", health_port=port))
    samples = wait_until(lambda: scrape_url(f"http://127.0.0.1:{port}/metrics"), timeout=30,
                         message="engine /metrics")
    labels = {"status": "executed", "symbol": "BTC/USDT", "mode": "paper"}
    assert value(samples, "tinywindow_orders_total", agent="proc-a", **labels) == 1
    assert value(samples, "tinywindow_orders_total", agent="proc-b", **labels) == 1
    assert value(samples, "tinywindow_orders_total", agent="both", **labels) == 2
    # Its first scrape already knows the state it never saw change.
    assert value(samples, "tinywindow_kill_switch_active") == 1


@pytest.mark.django_db(transaction=True)
def test_worker_when_running_tasks_then_task_metrics_heartbeat_and_json_logs(start_worker, redis_client):
    port = find_free_port()
    # Not on safety/execution, so not an engine: its health server must not vouch for the engine.
    worker = start_worker("strategy,default", name="obs", concurrency=2, health_port=port,
                          extra_env={"LOG_FORMAT": "json"})
    wait_for_worker(worker)
    url = f"http://127.0.0.1:{port}/metrics"
    for agent_id in (999_001, 999_002, 999_003):  # agents that do not exist: logged, not failed
        send("trading.tasks.tick_agent", "strategy", kwargs={"agent_id": agent_id})
    send("trading.tasks.execute_order", "default", args=[999_004])
    send("trading.tasks.tick_agent", "strategy", kwargs={"agent_id": 999_005},
         expires=datetime.now(UTC) - timedelta(seconds=5))

    def done():
        samples = scrape_url(url)
        return samples if (
            value(samples, "tinywindow_tasks_total", task="trading.tasks.tick_agent", state="success") == 3
            and value(samples, "tinywindow_tasks_total", task="trading.tasks.execute_order", state="success") == 1
            and value(samples, "tinywindow_tasks_total", task="trading.tasks.tick_agent", state="expired") == 1
        ) else None

    samples = wait_until(done, timeout=60, message="5 tasks counted in /metrics")
    assert value(samples, "tinywindow_task_duration_seconds_count", task="trading.tasks.tick_agent") == 3
    heartbeats = {dict(labels)["worker"]: v for (name, labels), v in samples.items()
                  if name == "tinywindow_worker_heartbeat_timestamp_seconds"}
    worker_name = f"obs@{socket.gethostname()}"
    assert worker_name in heartbeats and time.time() - heartbeats[worker_name] < 30
    assert value(samples, "tinywindow_engine_heartbeat_timestamp_seconds") is None  # not an engine

    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    gone = [r for r in lines if r["message"] == "tick for agent 999002: agent no longer exists"]
    assert len(gone) == 1
    assert gone[0]["agent_id"] == 999_002 and gone[0]["task_name"] == "trading.tasks.tick_agent"
    assert re.fullmatch(r"[0-9a-f-]{36}", gone[0]["task_id"]) and gone[0]["level"] == "INFO"
    missing = [r for r in lines if r["message"] == "execute_order: order 999004 does not exist"]
    assert len(missing) == 1 and missing[0]["order_id"] == 999_004 and missing[0]["level"] == "WARNING"
    # Celery's own lines are JSON too and carry the task id.
    assert any(r["logger"] == "celery.app.trace" and r.get("task_id") == gone[0]["task_id"] for r in lines)

    worker.stop()
    assert redis_client.get(f"tinywindow:worker:heartbeat:{worker_name}") is None  # a clean stop forgets it


# --- log formats --------------------------------------------------------------------------------

def _logger_with(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    from tinywindow.logs import ContextFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    log = logging.getLogger(f"tinywindow.test.{id(stream)}")
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, stream


def test_json_format_when_context_and_extra_then_one_object_per_line_with_both():
    from tinywindow.logs import JsonFormatter, log_context

    log, stream = _logger_with(JsonFormatter())
    with log_context(task_id="t-1", agent_id=3, order_id=5):
        log.info("order %s filled", "tw-3-x", extra={"order_id": 7, "venue": "paper"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "order tw-3-x filled" and first["level"] == "INFO"
    assert (first["task_id"], first["agent_id"], first["order_id"], first["venue"]) == ("t-1", 3, 7, "paper")
    assert datetime.fromisoformat(first["ts"]).tzinfo is not None
    assert "task_id" not in second and "ValueError: boom" in second["exc_info"]


def test_plain_format_when_context_then_ids_appended_to_the_line():
    from tinywindow.logs import PlainFormatter, log_context

    log, stream = _logger_with(PlainFormatter())
    with log_context(task_id="t-2", agent_id=4):
        log.warning("no decision")
    log.info("outside")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("WARNING " + log.name + " no decision [task_id=t-2 agent_id=4]")
    assert second.endswith(" outside")


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("LOG_FORMAT", "xml", "LOG_FORMAT='xml' is not one of plain, json"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL='LOUD' is not one of DEBUG"),
])
def test_settings_when_log_variable_malformed_then_one_line_error(name, value, expected):
    result = manage("check", env={**os.environ, name: value})
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr


# --- the catalog --------------------------------------------------------------------------------

CATALOG = ROOT / "docs" / "metrics.md"


def catalog_names() -> set[str]:
    return set(re.findall(r"^\| `(tinywindow_[a-z_]+)` \|", CATALOG.read_text(), re.M))


def exposed_base_names(samples: dict) -> set[str]:
    """Metric names as a catalog lists them (histogram series without _bucket/_count/_sum)."""
    found = set()
    for name in names(samples):
        if name.startswith("tinywindow_"):
            found.add(name if name.endswith("_total") else re.sub(r"_(bucket|count|sum)$", "", name))
    return found


@pytest.mark.django_db
def test_catalog_when_compared_with_the_code_then_every_metric_is_listed_once_and_exists(agent, fixed_price_feed,
                                                                                        redis_client):
    from prometheus_client import REGISTRY

    from safety.services.stats import market_data_seen
    from trading.services.snapshots import portfolio_snapshot_take

    listed = catalog_names()
    rows = re.findall(r"^\| `(tinywindow_[a-z_]+)` \|", CATALOG.read_text(), re.M)
    assert len(rows) == len(listed), "a metric is listed twice"

    # Every event metric defined in tinywindow/metrics.py (no gauges: a process-local gauge is
    # wrong in every other process, so state is read at scrape time) ...
    ours = [m for m in REGISTRY.collect() if m.name.startswith("tinywindow_")]
    assert {m.type for m in ours} == {"counter", "histogram"}
    defined = {m.name + ("_total" if m.type == "counter" else "") for m in ours}
    # ... and every scrape-time one, with all parts producing data.
    portfolio_snapshot_take()
    market_data_seen(symbol="BTC/USDT", candle_close_ts=time.time())
    redis_client.set("tinywindow:circuit_breaker:daily_loss", "CLOSED")
    redis_client.set("tinywindow:worker:heartbeat:w@h", str(time.time()))
    redis_client.set("tinywindow:engine:heartbeat", str(time.time()))
    scraped = exposed_base_names(scrape_django())
    assert defined | scraped == listed
