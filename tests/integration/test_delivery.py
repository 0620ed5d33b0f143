"""Issue 9, fault 5: duplicate and out-of-order task delivery, beat stopped, tasks past their
time limits — with real Celery worker processes, real PostgreSQL and Redis, and the local
exchange (real ccxt over HTTP on 127.0.0.1) where the venue's side of it matters.

    execute_order delivered twice at once      the second finds the order in flight: one venue order
    execute_order delivered again afterwards   the order is final: nothing sent
    tick delivered twice (same task id)        one order: its client order id comes from the task id
    a later tick before an earlier one         the earlier one, past its expiry, is discarded
    a tick older than the agent's last tick    stale: decides nothing
    beat stopped                               the engine runs the overdue breaker check itself:
                                               market data ages, the stale-data breaker trips
    execute_order past its soft limit          order left `submitted`, reconciled from the venue
    tick past its soft / hard limit            abandoned / process killed; the worker serves on
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from paper.exchange_server import Fault
from paper.models import PaperVenueOrder
from safety.models import BreakerStatus, CircuitBreakerConfig, CircuitBreakerState
from safety.services.breakers import breakers_ensure_defaults
from tests.conftest import wait_for_worker
from tests.factories import make_agent
from tests.helpers import wait_until
from tests.integration import test_ccxt_gateway
from tests.integration.test_ccxt_gateway import API_KEY, API_SECRET, ORDER_PATH
from tinywindow.embedded import find_free_port
from trading.models import Agent, Order
from trading.order_states import OrderStatus
from trading.services.agents import agent_tick
from trading.services.orders import order_create
from trading.tasks import execute_order, tick_agent

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal
ALTERNATE = "tinywindow.bench.strategies.Alternate"  # flat → long → flat: every tick that runs orders
# The local exchange (a thread of this process) and the settings pointing ccxt's binance at it.
exchange_env = test_ccxt_gateway.exchange_env
local_exchange = test_ccxt_gateway.local_exchange


def _engine_env(exchange_env, **extra: str) -> dict[str, str]:
    return {"EXCHANGE_API_URL": exchange_env.EXCHANGE_API_URL, "EXCHANGE_RATE_LIMIT_MS": "1",
            "EXCHANGE_TIMEOUT_MS": "30000", "EXCHANGE_API_KEY": API_KEY, "EXCHANGE_API_SECRET": API_SECRET,
            "PAPER_TRADING_MODE": "true", **extra}


def _posts(exchange) -> int:
    return len(exchange.requests(method="POST", path=ORDER_PATH))


def _status(order: Order) -> str:
    return Order.objects.get(pk=order.pk).status


# --- duplicate delivery ------------------------------------------------------------------------------
def test_execute_order_when_delivered_twice_at_once_then_one_venue_order(local_exchange, exchange_env, start_worker):
    engine = start_worker("execution", name="exec", concurrency=2, extra_env=_engine_env(exchange_env))
    wait_for_worker(engine)
    agent = make_agent(exchange="binance")
    # The first delivery's POST is held 3 s at the venue: the second arrives while it is in flight.
    local_exchange.faults.add(Fault(mode="latency_ms", latency_ms=3000, path=ORDER_PATH, method="POST"))
    order = order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("0.5"), enqueue=False)
    task_id = f"dup-{uuid.uuid4().hex}"

    execute_order.apply_async(args=[order.pk], task_id=task_id)
    wait_until(lambda: _status(order) == OrderStatus.SUBMITTED, timeout=30, message="first delivery in flight")
    execute_order.apply_async(args=[order.pk], task_id=task_id)  # the same task, delivered again
    wait_until(lambda: "another delivery is sending it" in engine.log(), timeout=30,
               message=f"second delivery leaves it to the first ({engine.log_path})")
    wait_until(lambda: _status(order) == OrderStatus.EXECUTED, timeout=30, message="order executed")

    # And once more after it is final (a late redelivery): nothing is sent.
    execute_order.apply_async(args=[order.pk], task_id=task_id)
    wait_until(lambda: engine.log().count(f"execute_order[{task_id}] succeeded") == 3, timeout=30,
               message="three deliveries done")
    assert _posts(local_exchange) == 1
    assert PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).count() == 1
    assert Order.objects.get(pk=order.pk).filled_quantity == D("0.5")


def test_tick_when_delivered_twice_then_one_order_and_a_new_tick_still_trades(start_worker):
    strategy = start_worker("strategy", name="strategy", concurrency=2)
    engine = start_worker("safety,execution", name="engine", concurrency=2)
    agent = make_agent(strategy=ALTERNATE, params={"exposure": "0.5"}, timeframe="1s", tick_seconds=1)
    wait_for_worker(strategy)
    wait_for_worker(engine)
    task_id = f"tick-{uuid.uuid4().hex}"

    # Twice at once (one of them may find the other holding the agent's lock) ...
    for _ in range(2):
        tick_agent.apply_async(kwargs={"agent_id": agent.pk}, queue="strategy", task_id=task_id)
    wait_until(lambda: strategy.log().count(f"tick_agent[{task_id}] succeeded") == 2, timeout=30,
               message=f"both deliveries done ({strategy.log_path})")
    wait_until(lambda: Order.objects.filter(agent=agent, status=OrderStatus.EXECUTED).count() == 1, timeout=30,
               message="the tick's order executed")
    # ... and again once its order has filled: Alternate would now sell, but this tick already ordered.
    tick_agent.apply_async(kwargs={"agent_id": agent.pk}, queue="strategy", task_id=task_id)
    wait_until(lambda: strategy.log().count(f"tick_agent[{task_id}] succeeded") == 3, timeout=30,
               message="third delivery done")
    assert Order.objects.filter(agent=agent).count() == 1
    assert "already placed its order" in Agent.objects.get(pk=agent.pk).last_decision

    tick_agent.apply_async(kwargs={"agent_id": agent.pk}, queue="strategy")  # a new tick decides afresh
    wait_until(lambda: Order.objects.filter(agent=agent, side="sell").exists(), timeout=30, message="new tick sells")
    assert Order.objects.filter(agent=agent).count() == 2


def test_ticks_when_later_one_runs_first_then_earlier_one_past_expiry_is_discarded(start_worker):
    strategy = start_worker("strategy", name="strategy", concurrency=2)
    engine = start_worker("safety,execution", name="engine", concurrency=2)
    agent = make_agent(strategy=ALTERNATE, params={"exposure": "0.5"}, timeframe="1s", tick_seconds=1)
    wait_for_worker(strategy)
    wait_for_worker(engine)
    # The earlier tick is held back (as by a retry or a slow route) beyond its one-interval expiry;
    # the later one is delivered at once.
    earlier = tick_agent.apply_async(kwargs={"agent_id": agent.pk}, queue="strategy", countdown=2,
                                     expires=agent.periodic_task.expire_seconds)
    later = tick_agent.apply_async(kwargs={"agent_id": agent.pk}, queue="strategy",
                                   expires=agent.periodic_task.expire_seconds)
    wait_until(lambda: f"tick_agent[{later.id}] succeeded" in strategy.log(), timeout=30, message="later tick ran")
    wait_until(lambda: f"Discarding revoked task: trading.tasks.tick_agent[{earlier.id}]" in strategy.log(),
               timeout=30, message=f"earlier tick discarded as expired ({strategy.log_path})")
    wait_until(lambda: not Order.objects.filter(agent=agent).exclude(status=OrderStatus.EXECUTED).exists(),
               timeout=30, message="orders final")
    assert Order.objects.filter(agent=agent).count() == 1  # the later tick's buy only


def test_tick_when_older_than_the_agents_last_tick_then_stale_and_decides_nothing(transactional_db):
    agent = make_agent(strategy=ALTERNATE, params={"exposure": "0.5"}, timeframe="1s", tick_seconds=1)
    now = timezone.now()
    assert len(agent_tick(agent_id=agent.pk, now=now).order_ids) == 1
    result = agent_tick(agent_id=agent.pk, now=now - timedelta(seconds=3))
    assert result.order_ids == [] and "stale tick" in result.decisions[0]
    assert Agent.objects.get(pk=agent.pk).last_tick_at == now  # the clock is not set back
    assert Order.objects.filter(agent=agent).count() == 1


# --- beat stopped ----------------------------------------------------------------------------------
def test_beat_stopped_when_ticks_stop_then_engine_trips_the_stale_data_breaker(start_worker):
    breakers_ensure_defaults(recovery_seconds=600)
    CircuitBreakerConfig.objects.filter(name="stale_data").update(threshold=D("4"))
    agent = make_agent(strategy=ALTERNATE, params={"exposure": "0.5"}, timeframe="1s", tick_seconds=1)
    strategy = start_worker("strategy", name="strategy", concurrency=1)
    # No beat anywhere: the engine's heartbeat is what notices the periodic check is overdue.
    engine = start_worker("safety,execution", name="engine", concurrency=1, health_port=find_free_port(),
                          extra_env={"BREAKER_CHECK_SECONDS": "1"})
    wait_for_worker(strategy)
    wait_for_worker(engine)
    tick_agent.apply_async(kwargs={"agent_id": agent.pk}, queue="strategy")  # the last tick beat sent
    wait_until(lambda: Order.objects.filter(agent=agent, status=OrderStatus.EXECUTED).exists(), timeout=30,
               message="the last tick traded")

    def stale_open() -> bool:
        return CircuitBreakerState.objects.filter(config__name="stale_data", target="BTC/USDT",
                                                  state=BreakerStatus.OPEN).exists()

    wait_until(stale_open, timeout=60, interval=0.5, message=f"stale_data breaker OPEN ({engine.log_path})")
    assert "is beat running?" in engine.log()
    # An order now (an operator's, or a tick on its way) is refused by the open breaker.
    refused = order_create(agent=agent, symbol="BTC/USDT", side="sell", quantity=D("0.001"), enqueue=False)
    assert refused.status == OrderStatus.REJECTED and "circuit breaker stale_data" in refused.reject_reason


# --- time limits -----------------------------------------------------------------------------------
def test_execute_order_when_venue_hangs_past_soft_limit_then_reconciled_and_worker_serves_on(
        local_exchange, exchange_env, start_worker):
    engine = start_worker("execution", name="exec", concurrency=1, extra_env=_engine_env(
        exchange_env, EXECUTION_TIME_LIMITS="2/8", RECONCILE_STALE_SECONDS="5"))
    wait_for_worker(engine)
    agent = make_agent(exchange="binance")
    # The venue takes the order but answers after 4 s: the soft limit (2 s) fires while waiting.
    local_exchange.faults.add(Fault(mode="latency_ms", latency_ms=4000, path=ORDER_PATH, method="POST"))
    order = order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("0.5"), enqueue=False)
    # Celery puts the sender's limits into the message; this process runs with the defaults, so it
    # sends what a process configured with EXECUTION_TIME_LIMITS=2/8 would.
    execute_order.apply_async(args=[order.pk], soft_time_limit=2, time_limit=8)

    wait_until(lambda: "passed its soft time limit" in engine.log(), timeout=30,
               message=f"soft time limit hit ({engine.log_path})")
    assert _status(order) == OrderStatus.SUBMITTED  # the defined state: the venue may hold it
    # The reconciliation the task queued asks the venue by client order id and records the fill.
    wait_until(lambda: _status(order) == OrderStatus.EXECUTED, timeout=40, message="reconciled to executed")
    assert _posts(local_exchange) == 1
    assert PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).count() == 1

    second = order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("0.1"))
    wait_until(lambda: _status(second) == OrderStatus.EXECUTED, timeout=30, message="the worker serves on")


def test_ticks_when_past_soft_and_hard_limits_then_abandoned_killed_and_worker_serves_on(start_worker):
    sleepy = make_agent(strategy="tests.strategies.Sleepy", params={})
    runaway = make_agent(strategy="tests.strategies.Runaway", params={})
    healthy = make_agent(strategy="tests.strategies.AlwaysLong", params={"exposure": "0.5"})
    strategy = start_worker("strategy", name="strategy", concurrency=1, extra_env={"TICK_TIME_LIMITS": "1/3"})
    wait_for_worker(strategy)

    # The limits travel in the message (Celery puts the sender's there): sent as a process with
    # TICK_TIME_LIMITS=1/3 would send them.
    limits = {"soft_time_limit": 1, "time_limit": 3}
    tick_agent.apply_async(kwargs={"agent_id": sleepy.pk}, queue="strategy", **limits)
    killed = tick_agent.apply_async(kwargs={"agent_id": runaway.pk}, queue="strategy", **limits)
    tick_agent.apply_async(kwargs={"agent_id": healthy.pk}, queue="strategy", **limits)
    wait_until(lambda: Order.objects.filter(agent=healthy).exists(), timeout=60,
               message=f"the healthy agent's tick ran after the others ({strategy.log_path})")
    log = strategy.log()
    assert f"tick for agent {sleepy.pk} passed its soft time limit" in log
    assert f"Hard time limit (3s) exceeded for trading.tasks.tick_agent[{killed.id}]" in log
    assert strategy.group_alive()
    assert not Order.objects.filter(agent__in=[sleepy, runaway]).exists()
    # The sleepy agent's lock was released at the soft limit: its next tick runs (and times out again).
    tick_agent.apply_async(kwargs={"agent_id": sleepy.pk}, queue="strategy", **limits)
    wait_until(lambda: strategy.log().count(f"tick for agent {sleepy.pk} passed its soft time limit") == 2,
               timeout=30, message="the sleepy agent ticked again")
