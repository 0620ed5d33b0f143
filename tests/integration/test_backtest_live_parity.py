"""Parity (a): one strategy, the same candles, through the live path and through the backtester.

Live: `tick_agent` runs in a real strategy worker process on the replay feed (`replay:binance`,
candles read from the `candles` table), its order goes through `execute_order` in a real engine
worker process to the paper venue, which fills it at the feed's last price with its fees and
slippage (PAPER_FEED=replay:binance: the venue prices at the feed the agent decides on).
The test plays the market: before each tick it publishes one more closed candle.
Because a live tick refuses stale data, the stored window is re-stamped at every step so that its
newest candle has just closed (the bars keep their order and prices; only the clock labels move).
A tick runs only after the previous one has finished and its order has filled, so every bar gets
exactly one decision, as in the backtest.

Backtest: `backtest_run` on the same candles (original timestamps) with the fill model read from
the same settings. The trades must be the same: per bar, side, quantity, price, fee and reason.
Volumes are deep, so no order is split across matching passes (no beat runs here to match a
remainder).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from paper.fills import FillModel
from paper.markets import paper_market
from tests.conftest import wait_for_worker
from tests.factories import make_agent
from tests.helpers import wait_until
from tinywindow.bench.backtest import random_walk
from trading.backtest.engine import BacktestConfig, backtest_run
from trading.feeds.base import Candle, floor_time
from trading.models import Agent, Fill, Order
from trading.models import Candle as CandleRow
from trading.order_states import OPEN_STATUSES
from trading.services.market_data import candles_store
from trading.strategies.sma_cross import SmaCross
from trading.tasks import tick_agent

D = Decimal
BARS = 30
PARAMS = {"fast": 2, "slow": 4, "exposure": "0.5"}
CAPITAL = D("10000")


def _publish(candles: list[Candle], upto: int) -> None:
    """Store bars 0..upto, stamped so that bar `upto` closed at the last whole minute."""
    newest_open = floor_time(timezone.now(), "1m") - timedelta(minutes=1)
    CandleRow.objects.filter(exchange="binance", symbol="BTC/USDT").delete()
    candles_store(exchange="binance", symbol="BTC/USDT", timeframe="1m", candles=[
        Candle(newest_open - timedelta(minutes=upto - i), c.open, c.high, c.low, c.close, c.volume)
        for i, c in enumerate(candles[: upto + 1])
    ])


def test_strategy_when_replayed_live_through_workers_and_backtested_then_same_trades(start_worker):
    candles, _ = random_walk(BARS, seed=5)
    # The paper venue fills at the feed the agent decides on (PAPER_FEED), as a paper desk replaying
    # stored candles would configure it.
    strategy_worker = start_worker("strategy,default", name="strategy", concurrency=1)
    engine = start_worker("safety,execution", name="engine", concurrency=1,
                          extra_env={"PAPER_FEED": "replay:binance"})
    agent = make_agent(strategy="trading.strategies.sma_cross.SmaCross", params=PARAMS, symbols=["BTC/USDT"],
                       capital=CAPITAL, feed="replay:binance", timeframe="1m", tick_seconds=60)
    wait_for_worker(strategy_worker)
    wait_for_worker(engine)

    live: list[tuple] = []
    seen = 0
    for bar in range(BARS):
        _publish(candles, bar)
        before = Agent.objects.get(pk=agent.pk).last_tick_at
        tick_agent.delay(agent.pk)
        try:
            wait_until(lambda before=before: Agent.objects.get(pk=agent.pk).last_tick_at != before, timeout=60,
                       interval=0.05, message=f"bar {bar}: the tick ran")
            wait_until(lambda: not Order.objects.filter(agent=agent, status__in=OPEN_STATUSES).exists(),
                       timeout=60, interval=0.05, message=f"bar {bar}: the order filled")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- strategy worker ---\n{strategy_worker.log()[-4000:]}"
                                 f"\n--- engine ---\n{engine.log()[-4000:]}") from None
        for order in Order.objects.filter(agent=agent, pk__gt=seen).order_by("pk"):
            seen = order.pk
            assert order.status == "executed", (bar, order.status, order.reject_reason)
            for fill in Fill.objects.filter(order=order).order_by("pk"):
                live.append((bar, order.side, fill.quantity, fill.price, fill.fee, order.decision_reason))

    result = backtest_run(SmaCross(**PARAMS), candles, BacktestConfig(
        symbol="BTC/USDT", timeframe="1m", capital=CAPITAL, market=paper_market("BTC/USDT"),
        fill_model=FillModel.from_settings(), passes_per_bar=60 // settings.PAPER_MATCH_SECONDS))
    backtested = [(f.decision_bar, f.side, f.quantity, f.price, f.fee, result.reason(f.order)) for f in result.fills]

    assert len(backtested) >= 4, "the series must make the strategy trade both ways"
    assert {side for _, side, *_ in backtested} == {"buy", "sell"}
    assert live == backtested
