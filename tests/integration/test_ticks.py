"""Ticks under real concurrency: the per-agent lock, the expiry of queued ticks, and ten agents
trading at once through real Celery workers (strategy and engine roles as separate processes)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from paper.models import PaperOrder
from tests import strategies
from tests.conftest import wait_for_worker
from tests.factories import make_agent
from tests.helpers import wait_until
from trading.models import Agent, Fill, Order, Position
from trading.order_states import OrderStatus
from trading.tasks import tick_agent

D = Decimal


def test_tick_when_previous_tick_still_running_then_next_skipped_never_overlapping(transactional_db):
    agent = make_agent(strategy="tests.strategies.Gated", params={})
    strategies.GATE.clear()
    strategies.ENTERED.clear()
    strategies.CALLS.clear()
    outcomes: dict[str, str] = {}

    def slow_tick() -> None:
        try:
            outcomes["slow"] = tick_agent(agent.pk)
        finally:
            connection.close()  # this thread's own connection

    worker = threading.Thread(target=slow_tick)
    worker.start()
    try:
        wait_until(strategies.ENTERED.is_set, timeout=15, message="the slow tick to be inside decide()")
        # The next tick arrives while the slow one holds the agent's lock: it must not run.
        assert tick_agent(agent.pk) == "skipped_overlap"
        assert strategies.CALLS == [1]
    finally:
        strategies.GATE.set()
        worker.join(timeout=30)
    assert outcomes["slow"] == "no_order"
    # Once the slow tick is done the lock is free again: the following tick runs.
    strategies.ENTERED.clear()
    assert tick_agent(agent.pk) == "no_order"
    assert strategies.CALLS == [1, 1]


def test_tick_when_expired_before_a_worker_takes_it_then_dropped_and_no_order(start_worker):
    agent = make_agent(strategy="tests.strategies.AlwaysLong", params={"exposure": "0.5"}, tick_seconds=1)
    schedule = agent.periodic_task
    # Sent as beat sends it: the schedule's queue, kwargs and expiry (one interval).
    sent_at = timezone.now()
    stale = tick_agent.apply_async(kwargs=json.loads(schedule.kwargs), queue=schedule.queue,
                                   expires=schedule.expire_seconds)
    expired_at = sent_at + timedelta(seconds=schedule.expire_seconds)
    wait_until(lambda: timezone.now() > expired_at + timedelta(milliseconds=200), timeout=10,
               message="the queued tick's expiry to pass")  # waiting on the clock itself, on purpose
    worker = start_worker("strategy", name="late")
    wait_for_worker(worker)
    wait_until(lambda: f"Discarding revoked task: trading.tasks.tick_agent[{stale.id}]" in worker.log(),
               timeout=20, message="the worker to discard the expired tick")
    assert not Order.objects.exists()
    assert Agent.objects.get(pk=agent.pk).last_tick_at is None
    # The same worker runs a tick that is still fresh: the first one was dropped for its age alone.
    tick_agent.apply_async(kwargs={"agent_id": agent.pk}, queue="strategy", expires=30)
    wait_until(lambda: Order.objects.filter(agent=agent).exists(), timeout=20, message="the fresh tick's order")


# Ten agents, three strategies, several symbols, on 1 s synthetic candles so that decisions
# change from one round to the next.
FLEET = [
    ("sma-btc", "trading.strategies.sma_cross.SmaCross", {"fast": 2, "slow": 5}, ["BTC/USDT"]),
    ("sma-eth", "trading.strategies.sma_cross.SmaCross", {"fast": 2, "slow": 4}, ["ETH/USDT"]),
    ("sma-sol-bnb", "trading.strategies.sma_cross.SmaCross", {"fast": 3, "slow": 6}, ["SOL/USDT", "BNB/USDT"]),
    ("rsi-btc", "trading.strategies.rsi_reversion.RsiReversion",
     {"period": 3, "oversold": "45", "exit_level": "55"}, ["BTC/USDT"]),
    ("rsi-eth", "trading.strategies.rsi_reversion.RsiReversion",
     {"period": 2, "oversold": "45", "exit_level": "55"}, ["ETH/USDT"]),
    ("rsi-sol-ltc", "trading.strategies.rsi_reversion.RsiReversion",
     {"period": 2, "oversold": "48", "exit_level": "52"}, ["SOL/USDT", "LTC/USDT"]),
    ("don-btc", "trading.strategies.donchian_breakout.DonchianBreakout", {"entry": 2, "exit": 2}, ["BTC/USDT"]),
    ("don-eth", "trading.strategies.donchian_breakout.DonchianBreakout", {"entry": 3, "exit": 2}, ["ETH/USDT"]),
    ("don-sol", "trading.strategies.donchian_breakout.DonchianBreakout", {"entry": 2, "exit": 3}, ["SOL/USDT"]),
    ("don-xrp-ada", "trading.strategies.donchian_breakout.DonchianBreakout", {"entry": 2, "exit": 2},
     ["XRP/USDT", "ADA/USDT"]),
]


def _executed_by_strategy() -> dict[str, int]:
    counts: dict[str, int] = {}
    for strategy in Order.objects.filter(status=OrderStatus.EXECUTED).values_list("agent__strategy", flat=True):
        counts[strategy] = counts.get(strategy, 0) + 1
    return counts


def test_ten_agents_when_trading_at_once_through_real_workers_then_every_book_consistent(start_worker):
    strategy_workers = start_worker("strategy,default", name="strategy", concurrency=4)
    engine = start_worker("safety,execution", name="engine", concurrency=2)
    agents = [
        make_agent(name=name, strategy=path, params={**params, "exposure": "0.5"}, symbols=symbols,
                   capital=D("20000"), timeframe="1s", tick_seconds=1)
        for name, path, params, symbols in FLEET
    ]
    wait_for_worker(strategy_workers)
    wait_for_worker(engine)

    def enough_trading() -> bool:
        executed = _executed_by_strategy()
        return len(executed) == 3 and sum(executed.values()) >= 15

    deadline = timezone.now() + timedelta(seconds=45)
    rounds = 0
    while not enough_trading():
        assert timezone.now() < deadline, f"not enough trading after {rounds} rounds: {_executed_by_strategy()}"
        round_start = timezone.now()
        for agent in agents:
            tick_agent.delay(agent.pk)
        rounds += 1
        try:
            wait_until(lambda start=round_start: Agent.objects.filter(last_tick_at__gte=start).count() == len(agents),
                       timeout=20, interval=0.05, message=f"round {rounds}: every agent ticked")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- strategy worker ---\n{strategy_workers.log()[-6000:]}"
                                 f"\n--- engine ---\n{engine.log()[-3000:]}") from None

    # No more ticks: let the engine finish what is in flight, then audit the books. An order the
    # venue filled only in part (volume cap) rests until a matching pass, which no beat runs here:
    # it is accounted for by its fills, like a final order.
    in_flight = [OrderStatus.PENDING, OrderStatus.SUBMITTED]
    wait_until(lambda: not Order.objects.filter(status__in=in_flight).exists(), timeout=30,
               message="every order sent and answered by the venue")
    orders = list(Order.objects.all())
    assert {o.status for o in orders} <= {OrderStatus.EXECUTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.REJECTED,
                                          OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.FAILED}
    assert all(o.reject_reason for o in orders if o.status == OrderStatus.REJECTED)  # refusals say why
    for order in orders:
        filled = Fill.objects.filter(order=order).aggregate(total=Sum("quantity"))["total"] or D(0)
        assert filled == order.filled_quantity, order
        if order.status == OrderStatus.EXECUTED:
            assert filled == order.quantity, order
        fills = set(Fill.objects.filter(order=order).values_list("trade_id", flat=True))
        trades = set(PaperOrder.objects.filter(client_order_id=order.client_order_id).values_list("trade_id",
                                                                                                 flat=True))
        assert fills == trades, order  # one paper_orders row per fill, and no other
    for position in Position.objects.all():
        signed = sum((f.quantity if f.side == "buy" else -f.quantity
                      for f in Fill.objects.filter(order__agent=position.agent, symbol=position.symbol)), D(0))
        assert position.quantity == signed, position
        assert position.quantity >= 0  # spot, long only: sells never exceed what was bought
    assert Fill.objects.count() == PaperOrder.objects.count()
    assert Agent.objects.filter(orders__status=OrderStatus.EXECUTED).distinct().count() >= 5
