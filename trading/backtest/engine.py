"""The backtester: a strategy replayed bar by bar over candles, filled by the paper venue's model.

Pure Python, no Django, no database, no Celery in the loop. It runs the very pieces a live tick
runs, in the order the live path runs them:

1. at the close of bar i the strategy sees the closed candles up to i (`Strategy.target_at`,
   which equals `decide` on the live tick's window) — unless the agent's previous order is still
   open, in which case the tick waits, as `agent_tick` does. An order's reason is `decide`'s own
   text for that bar, asked on demand (`BacktestResult.reason`);
2. the target becomes an order through `trading.sizing.order_for_target` (the live tick's sizing:
   the agent's capital, not its equity, times the exposure, at the market's precision);
3. the paper venue's fill model (`paper.fills.FillModel`) checks the funds the order must hold,
   then trades it at bar i's close moved by slippage, capped per matching pass at a share of the
   bar's volume, with the taker fee. The paper venue runs a matching pass every
   PAPER_MATCH_SECONDS, all of them against the newest closed candle until the next one closes,
   so a partly filled order gets `passes_per_bar` passes per bar;
4. each fill moves cash, the position (`position_apply_fill`: average cost, fees included) and
   the realized PnL; equity is marked at every bar's close.

Where the live path and this loop differ on purpose: no kill switch, breakers or pre-trade risk
limits (operator controls, not market behaviour), no latency, and the volume cap uses the bar's
own volume, where the live venue uses the newest 1-minute candle (the same thing at 1m).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from paper.fills import FillModel, buy_affordable, fill_fee
from trading.analytics import PerformanceFigures, performance_figures, periods_per_year_for
from trading.feeds.base import Candle, timeframe_seconds
from trading.gateways.base import Market
from trading.services.positions import position_apply_fill
from trading.sizing import order_for_target
from trading.strategies.base import Strategy

__all__ = ["BacktestConfig", "BacktestFill", "BacktestResult", "RoundTrip", "backtest_run"]

ZERO = Decimal(0)


@dataclass(frozen=True)
class BacktestConfig:
    symbol: str
    timeframe: str
    capital: Decimal
    market: Market
    fill_model: FillModel
    passes_per_bar: int = 1  # matching passes the paper venue runs while one bar is the newest


@dataclass(frozen=True)
class BacktestFill:
    """One fill of one order (an order may fill over several passes and bars)."""

    order: int  # 1, 2, ... in submission order
    bar: int  # index of the bar whose close priced the fill
    ts: datetime  # that bar's close time
    side: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    liquidity: str
    slippage_bps: Decimal
    realized_pnl: Decimal
    position: Decimal  # after the fill
    cash: Decimal  # after the fill
    decision_bar: int  # the bar whose decision created the order (its reason: BacktestResult.reason)


@dataclass(frozen=True)
class RoundTrip:
    """Flat -> long -> flat: the entry and exit bars (the exit is None while still open)."""

    entry_bar: int
    exit_bar: int | None
    entry_price: Decimal
    exit_price: Decimal | None


@dataclass
class BacktestResult:
    config: BacktestConfig
    strategy: Strategy
    candles: Sequence[Candle]
    equity: list[Decimal]  # marked at each bar's close
    position: list[Decimal]  # held after each bar
    fills: list[BacktestFill]
    order_pnls: list[Decimal]  # realized PnL of each order that realized any (the live "closed trades")
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (bar, reason) of refused orders
    exposed_bars: int = 0
    # order number -> (decision bar, position held then): what `reason` needs to ask `decide`.
    decisions: dict[int, tuple[int, Decimal]] = field(default_factory=dict)
    _reasons: dict[int, str] = field(default_factory=dict, repr=False)

    def reason(self, order: int) -> str:
        """The decision's reason for order `order`, exactly what the live order would store.

        Asked of the strategy's own `decide` on the live tick's window, on demand: the replay loop
        only needs targets (`target_at`), and most callers (a benchmark, a parameter sweep) never
        read the text. Also checks that `target_at` and `decide` agreed on that bar.
        """
        if order not in self._reasons:
            bar, held = self.decisions[order]
            window = self.candles[max(0, bar - self.strategy.warmup) : bar + 1]
            decision = self.strategy.decide(window, held)
            expected = self.strategy.target_at(self.candles, bar, held)
            if decision.target_exposure != expected:  # a broken target_at override: stop, loudly
                raise RuntimeError(f"{self.strategy!r}.target_at disagrees with decide at bar {bar}: "
                                   f"{expected} != {decision.target_exposure}")
            self._reasons[order] = decision.reason
        return self._reasons[order]

    @property
    def bar_seconds(self) -> int:
        return timeframe_seconds(self.config.timeframe)

    def close_time(self, bar: int) -> datetime:
        return self.candles[bar].ts + timedelta(seconds=self.bar_seconds)

    def figures(self) -> PerformanceFigures:
        """The shared performance figures (trading.analytics), per-bar equity, annualised 24/7."""
        step = self.bar_seconds
        # Each point is keyed by its bar's open time (it is valued at that bar's close): only the
        # order matters to the figures, and the candles carry these times already.
        points = [(candle.ts, value) for candle, value in zip(self.candles, self.equity, strict=True)]
        return performance_figures(
            points, self.order_pnls, periods_per_year=periods_per_year_for(step),
            exposure_seconds=float(self.exposed_bars * step), window_seconds=float(len(self.candles) * step),
        )

    def round_trips(self) -> list[RoundTrip]:
        """Entries (first fill from flat) and exits (the fill that made the position flat)."""
        trips: list[RoundTrip] = []
        held = ZERO
        entry: BacktestFill | None = None
        for fill in self.fills:
            if held == 0 and fill.position != 0:
                entry = fill
            elif held != 0 and fill.position == 0 and entry is not None:
                trips.append(RoundTrip(entry.decision_bar, fill.decision_bar, entry.price, fill.price))
                entry = None
            held = fill.position
        if entry is not None:
            trips.append(RoundTrip(entry.decision_bar, None, entry.price, None))
        return trips


@dataclass
class _Order:
    number: int
    side: str
    quantity: Decimal
    decision_bar: int
    filled: Decimal = ZERO


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, restoring its state after.

    The loop allocates only acyclic objects (Decimals, fills), which reference counting frees;
    but every allocation burst would let the collector re-walk the whole candle list (a million
    tracked objects), a third of the loop's time in measurements on 200,000 bars.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def backtest_run(strategy: Strategy, candles: Sequence[Candle], config: BacktestConfig, *,
                 progress: Callable[[int], None] | None = None, progress_every: int = 10_000) -> BacktestResult:
    """Replay `strategy` over `candles` (oldest first, contiguous, one timeframe).

    `progress(n)` is called with the number of bars done since the previous call, every
    `progress_every` bars and at the end (for a progress bar).
    """
    with _cyclic_gc_paused():
        return _replay(strategy, candles, config, progress, progress_every)


def _replay(strategy: Strategy, candles: Sequence[Candle], config: BacktestConfig,
            progress: Callable[[int], None] | None, progress_every: int) -> BacktestResult:
    market, model, capital = config.market, config.fill_model, config.capital
    passes = max(1, config.passes_per_bar)
    cash = capital
    base = ZERO  # the position, in base currency (the paper account holds exactly this)
    average = ZERO
    equity: list[Decimal] = []
    positions: list[Decimal] = []
    fills: list[BacktestFill] = []
    order_pnls: list[Decimal] = []
    rejected: list[tuple[int, str]] = []
    exposed = 0
    open_order: _Order | None = None
    order_pnl = ZERO
    orders = 0
    done = 0
    target_at = strategy.target_at
    decisions: dict[int, tuple[int, Decimal]] = {}

    for i, candle in enumerate(candles):
        close = candle.close
        if open_order is None:
            target = target_at(candles, i, base)
            if target is not None:
                intent = order_for_target(capital=capital, target_exposure=target, price=close, held=base,
                                          market=market)
                if intent is not None:
                    orders += 1
                    refusal = _refusal(intent.side, intent.quantity, close, candle.volume, cash, base, market, model)
                    if refusal:
                        rejected.append((i, refusal))
                    else:
                        open_order = _Order(orders, intent.side, intent.quantity, i)
                        decisions[orders] = (i, base)
                        order_pnl = ZERO
        if open_order is not None:
            # The submission's own pass and the matching passes while this bar is the newest.
            for _ in range(passes):
                quote = model.quote(side=open_order.side, remaining=open_order.quantity - open_order.filled,
                                    reference=close, volume=candle.volume, market=market)
                if quote is None:
                    break
                quantity, price = quote.quantity, quote.price
                if open_order.side == "buy":
                    quantity = buy_affordable(quantity=quantity, price=price, fee_rate=quote.fee_rate,
                                              available=cash, market=market)
                    if quantity <= 0:
                        open_order = None  # the venue cancels the rest: the account cannot pay for it
                        break
                    fee = fill_fee(quantity, price, quote.fee_rate)
                    cash -= quantity * price + fee
                else:
                    fee = fill_fee(quantity, price, quote.fee_rate)
                    cash += quantity * price - fee
                change = position_apply_fill(quantity=base, average_price=average, side=open_order.side,
                                             fill_quantity=quantity, fill_price=price, fee=fee)
                base, average = change.quantity, change.average_price
                order_pnl += change.realized_pnl
                open_order.filled += quantity
                fills.append(BacktestFill(
                    open_order.number, i, candle.ts, open_order.side, quantity, price, fee, quote.liquidity,
                    quote.slippage_bps, change.realized_pnl, base, cash, open_order.decision_bar,
                ))
                if open_order.filled >= open_order.quantity:
                    if open_order.side == "sell":
                        order_pnls.append(order_pnl)
                    open_order = None
                    break
        if base:
            exposed += 1
            equity.append(cash + base * close)
        else:
            equity.append(cash)
        positions.append(base)
        done += 1
        if progress is not None and done >= progress_every:
            progress(done)
            done = 0
    if open_order is not None and open_order.side == "sell" and open_order.filled > 0:
        order_pnls.append(order_pnl)  # still open at the end: what it realized so far counts
    if progress is not None and done:
        progress(done)
    return BacktestResult(config, strategy, candles, equity, positions, fills, order_pnls, rejected, exposed,
                          decisions)


def _refusal(side: str, quantity: Decimal, reference: Decimal, volume: Decimal, cash: Decimal, base: Decimal,
             market: Market, model: FillModel) -> str:
    """The paper venue's refusal at submission ("" when it accepts): size, then the funds to hold.

    The amount step and minimum notional are already met by `order_for_target`.
    """
    if quantity < market.min_amount:
        return f"quantity {quantity} below the minimum {market.min_amount}"
    if side == "buy":
        need = model.buy_hold(quantity=quantity, reference=reference, volume=volume, market=market)
        if cash < need:
            return f"insufficient balance: the order needs {need.normalize():f} {market.quote}, {cash:f} free"
    elif base < quantity:
        return f"insufficient balance: the order needs {quantity:f} {market.base}, {base:f} free"
    return ""
