"""Store a backtest's result so it can be browsed in the admin (`manage.py backtest --store`)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from decimal import Decimal

from django.db import transaction

from trading.backtest.engine import BacktestResult
from trading.models import BacktestRun, BacktestTrade

_BATCH = 5_000


def _decimal(value: Decimal | float | None) -> Decimal | None:
    # The two ratios are floats (a square root); the columns are Decimal(28, 10) like every figure.
    return None if value is None else Decimal(str(round(float(value), 10)))


@transaction.atomic
def backtest_store(*, result: BacktestResult, source: str, start: datetime, end: datetime, report_path: str,
                   actor: str) -> BacktestRun:
    """One `backtest_runs` row with the figures, and one `backtest_trades` row per fill."""
    figures = result.figures()
    config = result.config
    strategy = result.strategy
    run = BacktestRun.objects.create(
        strategy=f"{type(strategy).__module__}.{type(strategy).__name__}", params=strategy.params,
        symbol=config.symbol, timeframe=config.timeframe, source=source, start=start, end=end,
        candles=len(result.candles), capital=config.capital,
        fill_model={**{k: str(v) for k, v in asdict(config.fill_model).items()},
                    "passes_per_bar": config.passes_per_bar},
        final_equity=result.equity[-1] if result.equity else config.capital,
        trades=figures.trades, fills=len(result.fills), win_rate=figures.win_rate,
        sharpe_ratio=_decimal(figures.sharpe_ratio), sortino_ratio=_decimal(figures.sortino_ratio),
        max_drawdown=figures.max_drawdown, profit_factor=figures.profit_factor, total_pnl=figures.total_pnl,
        exposure_time=_decimal(figures.exposure_time), report_path=report_path, created_by=actor,
    )
    rows = (
        BacktestTrade(run=run, order_number=f.order, bar=f.bar, ts=result.close_time(f.bar), side=f.side,
                      quantity=f.quantity, price=f.price, fee=f.fee, realized_pnl=f.realized_pnl,
                      position=f.position, reason=result.reason(f.order))
        for f in result.fills
    )
    batch: list[BacktestTrade] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            BacktestTrade.objects.bulk_create(batch)
            batch = []
    if batch:
        BacktestTrade.objects.bulk_create(batch)
    return run
