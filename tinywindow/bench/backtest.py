"""Backtest speed: TinyWindow's backtester against backtesting.py, same candles, same run.

Both replay SMA crossover (fast 10, slow 20) over N one-minute candles (1,000,000; --quick
50,000): a seeded random walk, prices on a 0.01 grid, so both engines see the very same numbers
(Decimal for ours, the same values as float for backtesting.py). Fills are aligned so the trades
can be compared: backtesting.py with `trade_on_close=True` (a market order fills at the close of
the bar that decided it, as the paper venue fills at the last close) and no commission; ours with
the paper venue's fill model at zero fees, zero slippage and no volume cap.

TinyWindow's figure is candles per second of `backtest_run` (the same engine and strategy class
`manage.py backtest` and the live tick use, sizing every bar to the target exposure, so it also
pays for the small rebalancing orders a live agent makes), plus the performance figures. The
baseline is candles per second of backtesting.py's `Backtest.run` (its own loop and statistics)
on the example strategy from its documentation. Neither clock includes building the data. With
--quick both run three times, interleaved, and the best of each counts.

"Identical trades" compares round trips (entry bar, exit bar, entry and exit price): see
`compare_round_trips` for the two differences in semantics that are accounted for (exact ties of
the two averages: a handful in a million 0.01-grid bars, each reported). Goal: >= 1x.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tinywindow.bench.core import BenchContext, BenchRow, load_note

FULL_CANDLES = 1_000_000
QUICK_CANDLES = 50_000
FAST, SLOW = 10, 20
SYMBOL = "BTC/USDT"
START = datetime(2026, 1, 1, tzinfo=UTC)
_CENT = Decimal("0.01")


def random_walk(n: int, *, seed: int = 7):
    """(candles, frame): n one-minute candles of a seeded random walk, as Decimal Candles and as
    the float OHLCV DataFrame backtesting.py wants, holding the same values."""
    import numpy as np
    import pandas as pd

    from trading.feeds.base import Candle

    rng = np.random.default_rng(seed)
    closes = np.round(50_000 * np.exp(np.cumsum(rng.normal(0.0, 0.0008, n))), 2)
    opens = np.concatenate(([closes[0]], closes[:-1]))
    wick = np.abs(rng.normal(0.0, 0.0003, (2, n)))
    highs = np.round(np.maximum(opens, closes) * (1 + wick[0]), 2)
    lows = np.round(np.minimum(opens, closes) * (1 - wick[1]), 2)
    volume = Decimal(1_000_000)  # deep enough that no order is split by the volume cap
    step = timedelta(minutes=1)
    cents = [np.rint(a * 100).astype(np.int64).tolist() for a in (opens, highs, lows, closes)]
    candles = [
        Candle(START + step * i, Decimal(o).scaleb(-2), Decimal(h).scaleb(-2), Decimal(lo).scaleb(-2),
               Decimal(c).scaleb(-2), volume)
        for i, (o, h, lo, c) in enumerate(zip(*cents, strict=True))
    ]
    frame = pd.DataFrame({"Open": opens, "High": highs, "Low": lows, "Close": closes, "Volume": 1_000_000.0},
                         index=pd.date_range(START.replace(tzinfo=None), periods=n, freq="1min"))
    return candles, frame


def aligned_config(capital: Decimal = Decimal("10000")):
    """The paper venue's fill model with the frictions off: what backtesting.py assumes."""
    from paper.fills import FillModel
    from paper.markets import paper_market
    from trading.backtest.engine import BacktestConfig

    zero = Decimal(0)
    model = FillModel(taker_fee_rate=zero, maker_fee_rate=zero, base_slippage_bps=zero,
                      max_volume_share=Decimal(1), impact_bps_per_volume_share=zero)
    return BacktestConfig(symbol=SYMBOL, timeframe="1m", capital=capital, market=paper_market(SYMBOL),
                          fill_model=model, passes_per_bar=1)


def ours(candles, *, fast: int = FAST, slow: int = SLOW):
    """(result, figures) of TinyWindow's backtester on `candles`."""
    from trading.backtest.engine import backtest_run
    from trading.strategies.sma_cross import SmaCross

    result = backtest_run(SmaCross(fast=fast, slow=slow), candles, aligned_config())
    return result, result.figures()


def theirs(frame, *, fast: int = FAST, slow: int = SLOW):
    """backtesting.py's SMA-cross example, long only, fills at the deciding bar's close, no fees."""
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCrossExample(Strategy):
        # backtesting.py's Quick Start example. Its second branch also sells short
        # (`self.sell()`); a spot account cannot, so here it only closes the long.
        n1 = fast
        n2 = slow

        def init(self):
            price = self.data.Close
            self.ma1 = self.I(SMA, price, self.n1)
            self.ma2 = self.I(SMA, price, self.n2)

        def next(self):
            if crossover(self.ma1, self.ma2):
                self.position.close()
                self.buy()
            elif crossover(self.ma2, self.ma1):
                self.position.close()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "some trades remain open" and the like: expected here
        bt = Backtest(frame, SmaCrossExample, cash=100_000_000, commission=0, trade_on_close=True,
                      finalize_trades=False)
        return bt.run()


@dataclass(frozen=True)
class Comparison:
    ours: list[tuple]
    theirs: list[tuple]
    ties: list[int]  # bars where SMA(fast) == SMA(slow) exactly
    unexplained: list[tuple]  # differing round trips with no tie bar in or right before them

    @property
    def identical(self) -> bool:
        return self.ours == self.theirs

    @property
    def differing(self) -> int:
        return len(set(self.ours) ^ set(self.theirs))

    @property
    def note(self) -> str:
        if self.identical:
            return "identical trades"
        if not self.unexplained:
            return (f"identical trades except {self.differing} round trip(s) at {len(self.ties)} exact SMA tie(s), "
                    f"where the two semantics differ")
        return f"{len(self.unexplained)} unexplained differing round trip(s)"


def sma_ties(candles, *, fast: int = FAST, slow: int = SLOW) -> list[int]:
    """Bars where the two averages are exactly equal (Decimal), where the two semantics part."""
    closes = [c.close for c in candles]
    ties = []
    fast_sum = sum(closes[slow - fast : slow], Decimal(0))
    slow_sum = sum(closes[:slow], Decimal(0))
    for i in range(slow - 1, len(closes)):
        if i >= slow:
            fast_sum += closes[i] - closes[i - fast]
            slow_sum += closes[i] - closes[i - slow]
        if fast_sum * slow == slow_sum * fast:
            ties.append(i)
    return ties


def compare_round_trips(result, stats, candles, *, fast: int = FAST, slow: int = SLOW) -> Comparison:
    """Our round trips against backtesting.py's closed trades: entry/exit bar and price.

    Two differences in semantics, both accounted for here and nowhere else:
    1. Ours is a *state* strategy (long while fast > slow); the example acts on *crossover
       events*. At the first bar both averages exist, ours goes long if fast > slow already, the
       example waits for a cross. So our first round trip is dropped when it starts at that bar.
    2. A bar where the averages are exactly equal is "flat" for ours (not fast > slow) and "no
       cross" for the example, which then misses the next cross. Such bars are reported in
       `ties`; a round trip that differs must span a tie or start right after one, else it is
       `unexplained`. With no tie in the data the trades must be identical.
    backtesting.py's still-open trade at the end is not in its trade list (finalize_trades=False),
    so our still-open trip is dropped too.
    """
    mine = [(t.entry_bar, t.exit_bar, t.entry_price, t.exit_price) for t in result.round_trips()
            if t.exit_bar is not None]
    if mine and mine[0][0] == slow - 1:
        mine = mine[1:]
    trades = stats._trades
    other = [(int(e), int(x), Decimal(repr(ep)).quantize(_CENT), Decimal(repr(xp)).quantize(_CENT))
             for e, x, ep, xp in zip(trades.EntryBar, trades.ExitBar, trades.EntryPrice, trades.ExitPrice,
                                     strict=True)]
    ties = sma_ties(candles, fast=fast, slow=slow)
    # A tie at bar t explains a differing round trip that spans it or starts right after it.
    differing = set(mine) ^ set(other)
    unexplained = sorted(trip for trip in differing
                         if not any(trip[0] - 1 <= t <= trip[1] for t in ties))
    return Comparison(mine, other, ties, unexplained)


def run(ctx: BenchContext) -> list[BenchRow]:
    n = QUICK_CANDLES if ctx.quick else FULL_CANDLES
    ctx.say(f"  building {n:,} one-minute candles (seeded random walk) ...")
    candles, frame = random_walk(n)
    warm = min(n, 5_000)  # warm-up: imports, caches, both engines once on a small slice
    ours(candles[:warm])
    theirs(frame.iloc[:warm])
    note = load_note()
    # Interleaved repeats, best of each: on a shared machine a burst of someone else's load can
    # land on either engine; the fastest of several runs is the least disturbed one (as timeit does).
    repeats = 3 if ctx.quick else 1
    ours_rate = theirs_rate = 0.0
    for round_ in range(1, repeats + 1):
        ctx.say(f"  round {round_}/{repeats}: TinyWindow backtester ...")
        started = time.perf_counter()
        result, _figures = ours(candles)
        ours_rate = max(ours_rate, n / (time.perf_counter() - started))
        ctx.say(f"  round {round_}/{repeats}: backtesting.py ...")
        started = time.perf_counter()
        stats = theirs(frame)
        theirs_rate = max(theirs_rate, n / (time.perf_counter() - started))
    comparison = compare_round_trips(result, stats, candles)
    ctx.say(f"  {ours_rate:,.0f} vs {theirs_rate:,.0f} candles/s; {len(comparison.ours)} round trips, "
            f"{comparison.note}")
    return [BenchRow(
        scenario="backtest", measure=f"SMA crossover, {n:,} 1m candles: candles/s",
        tinywindow=ours_rate, baseline=theirs_rate, unit="candles/s", goal="≥ 1× with identical trades",
        passed=ours_rate >= theirs_rate and not comparison.unexplained,
        note=f"{len(comparison.ours)} round trips, {comparison.note}; {note}".strip("; "),
    )]
