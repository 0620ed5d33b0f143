"""Risk snapshot: one `portfolio_snapshots` row (`portfolio_snapshot_take()`, what beat runs every
RISK_SNAPSHOT_SECONDS) for a book of 100 agents × 10 symbols, and for 10 agents × 1 symbol.

Every agent holds a position in each of its symbols and has one open order; marks come from
stored one-minute candles (the `replay:binance` feed: one statement for every symbol, the
case that costs queries — the synthetic feed computes its marks without the database).
Measured: wall clock of the call (median after a warm-up) and the number of SQL statements it
sends (Django's CaptureQueriesContext). There is no bare baseline for this one (issue 10): the
small book's figures stand in the baseline column, so the ratio shows how the cost grows with
the book. Goal: under 100 ms at 100 × 10, and the same number of queries at both sizes.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tinywindow.bench.core import BenchContext, BenchRow, load_note, reset_book

GOAL_MS = 100.0
FEED = "replay:binance"


def _book(*, agents: int, symbols: list[str], tag: str) -> None:
    """`agents` agents trading `symbols`, each with a position per symbol and one open order."""
    from trading.models import Agent, Order, Position

    made = Agent.objects.bulk_create([
        Agent(name=f"bench-snap-{tag}-{i}", strategy="trading.strategies.sma_cross.SmaCross", symbols=symbols,
              timeframe="1m", feed=FEED, capital=Decimal("10000"), status="stopped") for i in range(agents)])
    Position.objects.bulk_create([
        Position(agent=agent, symbol=symbol, quantity=Decimal("1.5"), average_price=Decimal("100"),
                 realized_pnl=Decimal("1")) for agent in made for symbol in symbols])
    Order.objects.bulk_create([
        Order(client_order_id=f"bench-snap-{tag}-{agent.pk}", agent=agent, exchange="paper", mode="paper",
              symbol=symbols[0], side="buy", quantity=Decimal("0.1"), status="submitted") for agent in made])


def _candles(symbols: list[str], end: datetime) -> None:
    from trading.feeds.base import Candle
    from trading.services.market_data import candles_store

    for i, symbol in enumerate(symbols):
        candles = [Candle(end - timedelta(minutes=60 - k), *(Decimal(100 + i + k % 7),) * 4, Decimal(1))
                   for k in range(60)]
        candles_store(exchange="binance", symbol=symbol, timeframe="1m", candles=candles)


def _measure(runs: int, now: datetime) -> tuple[float, int]:
    """Median milliseconds of `runs` snapshots (after one warm-up) and the statements one sends."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from trading.services.snapshots import portfolio_snapshot_take

    portfolio_snapshot_take(now=now)
    samples = []
    counts = set()
    for run in range(runs):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            portfolio_snapshot_take(now=now + timedelta(seconds=run + 1))
            samples.append((time.perf_counter() - started) * 1000)
        counts.add(len(queries))
    return statistics.median(samples), max(counts)


def _clear() -> None:
    from trading.models import Agent, PortfolioSnapshot

    reset_book()
    PortfolioSnapshot.objects.all().delete()
    Agent.objects.filter(name__startswith="bench-snap-").delete()


def run(ctx: BenchContext) -> list[BenchRow]:
    from trading.models import Agent

    runs = 5 if ctx.quick else 25
    symbols = [f"C{i}/USDT" for i in range(10)]
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    _candles(symbols, now.replace(second=0))
    try:
        _clear()
        ctx.say("  10 agents × 1 symbol ...")
        _book(agents=10, symbols=symbols[:1], tag="small")
        small_ms, small_queries = _measure(runs, now)
        _clear()
        load = load_note()
        ctx.say(f"  100 agents × 10 symbols: {runs} snapshots ({load}) ...")
        _book(agents=100, symbols=symbols, tag="large")
        large_ms, large_queries = _measure(runs, now + timedelta(minutes=1))
        others = Agent.objects.exclude(name__startswith="bench-snap-").count()  # valued too (no positions)
    finally:
        _clear()
    return [
        BenchRow("risk snapshot", f"portfolio_snapshot_take(), 100 agents × 10 symbols (+{others} other agents), "
                 f"median of {runs} (baseline column: 10 agents × 1 symbol)", large_ms, small_ms, "ms",
                 f"< {GOAL_MS:.0f} ms", large_ms < GOAL_MS, note=load),
        BenchRow("risk snapshot", "SQL statements per snapshot, 100 × 10 (baseline column: 10 × 1)",
                 float(large_queries), float(small_queries), "queries", "same at both sizes",
                 large_queries == small_queries),
    ]
