"""The backtester's engine on hand-built candles: fills priced by the paper venue's model, the
live tick's sizing and waiting, funds, and the strategies' fast path equal to `decide`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from paper.fills import FillModel
from paper.markets import paper_market
from tinywindow.bench.backtest import random_walk
from trading.backtest.engine import BacktestConfig, backtest_run
from trading.feeds.base import Candle
from trading.feeds.synthetic import SyntheticFeed
from trading.sizing import order_for_target
from trading.strategies.donchian_breakout import DonchianBreakout
from trading.strategies.rsi_reversion import RsiReversion
from trading.strategies.sma_cross import SmaCross

D = Decimal
T0 = datetime(2026, 3, 1, tzinfo=UTC)
BTC = paper_market("BTC/USDT")
MODEL = FillModel(taker_fee_rate=D("0.001"), maker_fee_rate=D("0.0008"), base_slippage_bps=D("2"),
                  max_volume_share=D("0.1"))


def bars(closes, volume="1000") -> list[Candle]:
    out, prev = [], D(closes[0])
    for i, raw in enumerate(closes):
        close = D(raw)
        out.append(Candle(T0 + timedelta(minutes=i), prev, max(prev, close), min(prev, close), close, D(volume)))
        prev = close
    return out


def config(capital="1000", passes=1, model=MODEL) -> BacktestConfig:
    return BacktestConfig(symbol="BTC/USDT", timeframe="1m", capital=D(capital), market=BTC, fill_model=model,
                          passes_per_bar=passes)


STRATEGIES = [
    SmaCross(fast=3, slow=8),
    SmaCross(fast=10, slow=20, exposure="1"),
    RsiReversion(period=3, oversold="40", exit_level="60"),
    DonchianBreakout(entry=5, exit=3),
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_target_at_when_replaying_a_series_then_equals_decide_on_every_bar(strategy):
    feed = SyntheticFeed(seed=3)
    series = [feed.candles("ETH/USDT", "1m", limit=300, end=T0), random_walk(300, seed=11)[0]]
    for candles in series:
        for i in range(len(candles)):
            window = candles[max(0, i - strategy.warmup): i + 1]  # what a live tick passes
            assert strategy.target_at(candles, i, D(0)) == strategy.decide(window, D(0)).target_exposure, i
        # Out of order (a fresh start, a jump back): the memo starts over, the answer is the same.
        for i in (250, 40, 41, 7, 299):
            window = candles[max(0, i - strategy.warmup): i + 1]
            assert strategy.target_at(candles, i, D(0)) == strategy.decide(window, D(0)).target_exposure, i


def test_backtest_when_fast_average_crosses_then_fill_priced_like_the_paper_venue_by_hand():
    # Bar 1: SMA(1)=100 = SMA(2)=100, target 0, nothing held: no order. Bar 2: 110 > 105: hold 50 %.
    result = backtest_run(SmaCross(fast=1, slow=2, exposure="0.5"), bars(["100", "100", "110"]), config())
    [fill] = result.fills
    # target 1000 * 0.5 / 110 = 4.545454.. -> 4.54545 (BTC step 0.00001, rounded down)
    assert (fill.bar, fill.side, fill.quantity) == (2, "buy", D("4.54545"))
    # slippage 2 bps + 50 bps * 4.54545 / 1000 = 2.2272725 -> 2.2273; 110 * 1.00022273 = 110.0245 -> 110.02
    assert fill.slippage_bps == D("2.2273")
    assert fill.price == D("110.02")
    # fee 4.54545 * 110.02 * 0.001 = 0.500090409 -> 0.50009041; cash 1000 - 500.090409 - 0.50009041
    assert fill.fee == D("0.50009041")
    assert fill.cash == D("499.40950059")
    assert result.equity == [D("1000"), D("1000"), D("499.40950059") + D("4.54545") * 110]
    assert result.reason(fill.order).startswith("fast SMA(1)=110 > slow SMA(2)=105")
    assert result.exposed_bars == 1


def test_backtest_when_order_bigger_than_volume_cap_then_fills_over_passes_and_ticks_wait():
    # Volume 20: one pass trades at most 2 units; two passes a bar. The buy is 1000 * 0.9 / 110 ->
    # 8.18181 units: 2 + 2 at bar 2, 2 + 2 at bar 3 (priced at that bar's close), the rest at bar 4.
    # Meanwhile the strategy's decisions are not acted on: the order is still open, as a live tick
    # waits for it. The sell (bar 5: 100 < 106, flat) walks out the same way.
    closes = ["100", "100", "110", "111", "112", "100", "100", "100"]
    model = FillModel(taker_fee_rate=D(0), maker_fee_rate=D(0), base_slippage_bps=D(0), max_volume_share=D("0.1"),
                      impact_bps_per_volume_share=D(0))
    result = backtest_run(SmaCross(fast=1, slow=2, exposure="0.9"), bars(closes, volume="20"),
                          config(capital="1000", passes=2, model=model))
    assert [(f.order, f.side, f.bar, f.quantity, f.price) for f in result.fills] == [
        (1, "buy", 2, D(2), D(110)), (1, "buy", 2, D(2), D(110)), (1, "buy", 3, D(2), D(111)),
        (1, "buy", 3, D(2), D(111)), (1, "buy", 4, D("0.18181"), D(112)),
        (2, "sell", 5, D(2), D(100)), (2, "sell", 5, D(2), D(100)), (2, "sell", 6, D(2), D(100)),
        (2, "sell", 6, D(2), D(100)), (2, "sell", 7, D("0.18181"), D(100)),
    ]
    assert result.position[-1] == 0
    # Cash: 1000 - 440 - 444 - 0.18181 * 112 + 8.18181 * 100; the closed trade's PnL is the same
    # change (average cost: up to the last of 28 digits, as the positions table keeps 10 places).
    assert result.equity[-1] == D(1000) - 440 - 444 - D("0.18181") * 112 + D("818.181")
    [pnl] = result.order_pnls
    assert pnl.quantize(D("1e-10")) == result.equity[-1] - D(1000)


def test_backtest_when_account_cannot_hold_the_buy_then_refused_and_nothing_filled():
    # Exposure 1 of all capital plus the fee and slippage headroom is more than the account has.
    result = backtest_run(SmaCross(fast=1, slow=2, exposure="1"), bars(["100", "100", "110"]), config())
    assert result.fills == []
    [(bar, reason)] = result.rejected
    assert bar == 2
    assert reason.startswith("insufficient balance")
    assert result.equity[-1] == D(1000)


def test_order_for_target_when_difference_small_or_selling_then_as_the_live_tick_sizes():
    assert order_for_target(capital=D(1000), target_exposure=D("0.5"), price=D(100), held=D(0), market=BTC).quantity \
        == D(5)
    # Worth less than the 5 USDT minimum notional: no order.
    assert order_for_target(capital=D(1000), target_exposure=D("0.5"), price=D(100), held=D("4.96"),
                            market=BTC) is None
    sell = order_for_target(capital=D(1000), target_exposure=D(0), price=D(100), held=D(5), market=BTC)
    assert (sell.side, sell.quantity, sell.reduce_only) == ("sell", D(5), True)
