"""Performance figures from an equity series and a list of closed-trade PnLs.

Pure Python (no Django): the agent-performance task and the backtester's reports both call
`performance_figures`, so live and backtest numbers mean the same thing. The definitions are
written down in docs/metrics.md ("Agent performance figures") and checked against
empyrical-reloaded in tests/unit/test_analytics.py. In short:

- returns are simple period returns of consecutive equity points, r_i = E_i / E_(i-1) - 1;
- Sharpe = mean(r - rf) / stdev(r - rf) * sqrt(periods_per_year), sample stdev (n - 1);
- Sortino = mean(r - rf) * periods_per_year / (sqrt(mean(min(r - rf, 0)^2)) * sqrt(periods_per_year)),
  the downside deviation taken over ALL periods (gains count as 0), as empyrical does;
- rf is the annual `risk_free_rate` spread evenly over the periods (rf / periods_per_year);
- a figure that the data cannot define is None, never inf or NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import accumulate
from operator import itemgetter

__all__ = [
    "HOURS_PER_YEAR",
    "MINUTES_PER_YEAR",
    "SECONDS_PER_YEAR",
    "PerformanceFigures",
    "max_drawdown",
    "performance_figures",
    "periods_per_year_for",
    "simple_returns",
]

ZERO = Decimal("0")

# 24/7 crypto markets: a year is 365 full days (no 252-trading-day convention).
SECONDS_PER_YEAR = 365 * 24 * 60 * 60
MINUTES_PER_YEAR = SECONDS_PER_YEAR / 60
HOURS_PER_YEAR = SECONDS_PER_YEAR / 3600


@dataclass(frozen=True)
class PerformanceFigures:
    """All figures over one window; None where the input cannot define one (docs/metrics.md).

    Money and fractions are Decimal; the two ratios are float (they come out of a square root).
    """

    win_rate: Decimal | None  # winning trades / trades, 0..1; None without trades
    sharpe_ratio: float | None  # annualised; None with < 2 returns or zero dispersion
    sortino_ratio: float | None  # annualised; None with < 2 returns or no period below rf
    max_drawdown: Decimal | None  # largest fall from a running peak of the equity, 0..1; None with no point
    profit_factor: Decimal | None  # gross profit / gross loss; None without a losing trade
    total_pnl: Decimal  # sum of the trade PnLs (fees included by the caller)
    trades: int  # number of closed trades
    exposure_time: float | None  # fraction 0..1 of the window with an open position; None if not given


def periods_per_year_for(period_seconds: float) -> float:
    """How many periods of `period_seconds` a 24/7 year has (365 days)."""
    if period_seconds <= 0:
        raise ValueError("period_seconds must be positive")
    return SECONDS_PER_YEAR / period_seconds


def _returns(values: Sequence[float]) -> list[float] | None:
    if len(values) > 1 and min(values[:-1]) <= 0:
        return None
    return [current / previous - 1.0 for previous, current in zip(values, values[1:], strict=False)]


def simple_returns(equity: Sequence[Decimal]) -> list[float] | None:
    """r_i = E_i / E_(i-1) - 1 for consecutive points; None when an E_(i-1) is not positive
    (a return on zero or negative equity means nothing).

    In binary floating point: a backtest hands in a million points, and the ratios built from
    these returns are floats anyway (relative error ~1e-16, far below any figure's meaning)."""
    return _returns([float(e) for e in equity])


def _max_drawdown(equity: Sequence[Decimal | float], values: Sequence[float]) -> Decimal | None:
    # The worst (peak, trough) pair is found in floats (C-level passes over a million points),
    # then its drawdown is computed exactly in Decimal from the original values.
    if not equity:
        return None
    peaks = list(accumulate(values, max))
    drawdowns = [(peak - value) / peak if peak > 0 else 0.0 for peak, value in zip(peaks, values, strict=True)]
    worst = max(drawdowns)
    if worst <= 0.0:
        return ZERO
    trough = drawdowns.index(worst)
    top, bottom = equity[values.index(peaks[trough])], equity[trough]
    if isinstance(top, Decimal) and isinstance(bottom, Decimal):
        return (top - bottom) / top
    return Decimal(repr(worst))  # float input: as exact as it came


def max_drawdown(equity: Sequence[Decimal]) -> Decimal | None:
    """Largest (peak - trough) / peak over the series, the first point included as a peak."""
    return _max_drawdown(equity, [float(e) for e in equity])


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _sharpe(excess: Sequence[float], periods_per_year: float) -> float | None:
    if len(excess) < 2:
        return None
    mean = _mean(excess)
    deviations = [r - mean for r in excess]
    variance = math.fsum([d * d for d in deviations]) / (len(excess) - 1)  # sample variance
    if variance <= 0:
        return None
    return mean / math.sqrt(variance) * math.sqrt(periods_per_year)


def _sortino(excess: Sequence[float], periods_per_year: float) -> float | None:
    if len(excess) < 2:
        return None
    below = [r for r in excess if r < 0]
    downside = math.sqrt(math.fsum([r * r for r in below]) / len(excess))  # over ALL periods
    if downside <= 0:
        return None
    return _mean(excess) * periods_per_year / (downside * math.sqrt(periods_per_year))


def performance_figures(
    equity: Sequence[tuple[datetime | float, Decimal | float]],
    trade_pnls: Sequence[Decimal],
    *,
    periods_per_year: float = HOURS_PER_YEAR,
    risk_free_rate: float = 0.0,
    exposure_seconds: float | None = None,
    window_seconds: float | None = None,
) -> PerformanceFigures:
    """Every figure of one window.

    `equity`: (time, equity) points one period apart (sorted here by time: a datetime, or epoch
    seconds), e.g. the agent's equity at the end of each hour; `periods_per_year` must match that
    spacing (default: hourly points, 365 * 24). Values are Decimal (the drawdown then exact) or float: float(Decimal)
    costs about a microsecond, so a backtest with a million bars may hand in floats.
    `trade_pnls`: the realized PnL of each closed trade, fees included.
    `risk_free_rate`: annual, as a fraction (0.04 = 4 %). `exposure_seconds` / `window_seconds`
    give `exposure_time`; leave them None when unknown.
    """
    if periods_per_year <= 0:
        raise ValueError("periods_per_year must be positive")
    # Timsort on points already in order (the usual case) is one linear pass.
    equity_values = [value for _, value in sorted(equity, key=itemgetter(0))]
    floats = [float(value) for value in equity_values]
    returns = _returns(floats)
    sharpe = sortino = None
    if returns is not None:
        per_period_rf = risk_free_rate / periods_per_year
        excess = [r - per_period_rf for r in returns] if per_period_rf else returns
        sharpe = _sharpe(excess, periods_per_year)
        sortino = _sortino(excess, periods_per_year)

    pnls = list(trade_pnls)
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    gross_loss = -sum(losses, ZERO)
    exposure = None
    if exposure_seconds is not None and window_seconds:
        exposure = min(max(exposure_seconds / window_seconds, 0.0), 1.0)
    return PerformanceFigures(
        win_rate=Decimal(len(wins)) / len(pnls) if pnls else None,
        sharpe_ratio=sharpe,
        sortino_ratio=sortino,
        max_drawdown=_max_drawdown(equity_values, floats),
        profit_factor=sum(wins, ZERO) / gross_loss if gross_loss > 0 else None,
        total_pnl=sum(pnls, ZERO),
        trades=len(pnls),
        exposure_time=exposure,
    )
