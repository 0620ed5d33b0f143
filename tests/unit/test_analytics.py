"""trading.analytics: every figure against empyrical-reloaded / pandas on the same series, and
against a small case computed by hand (docs/metrics.md, "Agent performance figures")."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import empyrical
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.analytics import (
    HOURS_PER_YEAR,
    MINUTES_PER_YEAR,
    PerformanceFigures,
    performance_figures,
    periods_per_year_for,
)

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def hourly(values) -> list[tuple[datetime, Decimal]]:
    return [(T0 + timedelta(hours=i), D(str(v))) for i, v in enumerate(values)]


def random_equity(seed: int, n: int, start: str = "10000") -> list[Decimal]:
    rng = random.Random(seed)
    equity = [D(start)]
    for _ in range(n - 1):
        equity.append((equity[-1] * D(str(1 + rng.gauss(0.0002, 0.01)))).quantize(D("0.00000001")))
    return equity


def empyrical_returns(equity: list[Decimal]) -> np.ndarray:
    """Returns as pandas computes them from the float equity curve (an independent path)."""
    return pd.Series([float(e) for e in equity]).pct_change().dropna().to_numpy()


def test_performance_figures_when_small_case_then_equal_to_hand_arithmetic():
    # Equity 100 -> 110 -> 99 -> 108.9 (hourly):
    #   returns r = +0.10, -0.10, +0.10; mean = 0.1 / 3 = 1/30
    #   sample variance = ((1/15)^2 + (2/15)^2 + (1/15)^2) / (3 - 1) = (6/225) / 2 = 1/75
    #   stdev = 1/sqrt(75) = 0.2/sqrt(3); Sharpe per period = (1/30) / (0.2/sqrt(3)) = sqrt(3)/6
    #   annualised (8760 hourly periods in 365 days): sqrt(3)/6 * sqrt(8760) = 27.0185...
    #   downside deviation = sqrt((0 + 0.01 + 0) / 3) = 0.1/sqrt(3); Sortino per period =
    #   (1/30) / (0.1/sqrt(3)) = sqrt(3)/3, annualised * sqrt(8760) = 54.0370...
    #   max drawdown: peak 110, trough 99 -> 11 / 110 = 0.1
    # Trades +10, -5, +15, -2.5, 0: wins 2 of 5 -> 0.4 (a zero trade is not a win);
    #   gross profit 25, gross loss 7.5 -> profit factor 25 / 7.5 = 3.333...; total 17.5
    # Exposure 1800 s of 7200 s -> 0.25
    figures = performance_figures(
        hourly(["100", "110", "99", "108.9"]), [D("10"), D("-5"), D("15"), D("-2.5"), D("0")],
        exposure_seconds=1800, window_seconds=7200,
    )
    assert figures.sharpe_ratio == pytest.approx(math.sqrt(3) / 6 * math.sqrt(8760), rel=1e-12)
    assert figures.sharpe_ratio == pytest.approx(27.0185, abs=1e-4)
    assert figures.sortino_ratio == pytest.approx(math.sqrt(3) / 3 * math.sqrt(8760), rel=1e-12)
    assert figures.sortino_ratio == pytest.approx(54.0370, abs=1e-4)
    assert figures.max_drawdown == D("0.1")
    assert figures.win_rate == D("0.4")
    assert figures.profit_factor == D("25") / D("7.5")
    assert figures.total_pnl == D("17.5")
    assert figures.trades == 5
    assert figures.exposure_time == 0.25


def test_performance_figures_when_risk_free_rate_then_subtracted_per_period():
    # rf = 8.76 % a year over 8760 hourly periods = 0.00001 a period. Returns 0.01, 0.03:
    #   excess 0.00999, 0.02999; mean 0.01999; sample stdev = |0.02| / sqrt(2) = 0.0141421...
    #   Sharpe = 0.01999 / 0.0141421356 * sqrt(8760) = 1.41350... * 93.59487 = 132.299...
    figures = performance_figures(hourly(["100", "101", "104.03"]), [], risk_free_rate=0.0876)
    assert figures.sharpe_ratio == pytest.approx(0.01999 / (0.02 / math.sqrt(2)) * math.sqrt(8760), rel=1e-9)
    assert figures.sortino_ratio is None  # no period below the risk-free rate: nothing to divide by


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("periods_per_year", [HOURS_PER_YEAR, MINUTES_PER_YEAR, 365.0])
def test_ratios_when_random_series_then_equal_to_empyrical(seed, periods_per_year):
    equity = random_equity(seed, 300)
    returns = empyrical_returns(equity)
    rf = 0.03
    figures = performance_figures([(T0 + timedelta(minutes=i), e) for i, e in enumerate(equity)], [],
                                  periods_per_year=periods_per_year, risk_free_rate=rf)
    assert figures.sharpe_ratio == pytest.approx(
        empyrical.sharpe_ratio(returns, risk_free=rf / periods_per_year, annualization=periods_per_year), rel=1e-9)
    assert figures.sortino_ratio == pytest.approx(
        empyrical.sortino_ratio(returns, required_return=rf / periods_per_year, annualization=periods_per_year),
        rel=1e-9)
    # empyrical reports drawdown as a negative fraction of the running peak (anchored at the start).
    assert float(figures.max_drawdown) == pytest.approx(-empyrical.max_drawdown(returns), rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.decimals(min_value=D("1"), max_value=D("1000000"), places=4), min_size=3, max_size=40),
       st.lists(st.decimals(min_value=D("-1000"), max_value=D("1000"), places=2), max_size=40))
def test_every_figure_when_any_series_then_equal_to_empyrical_and_pandas(equity, pnls):
    figures = performance_figures(hourly(equity), pnls, exposure_seconds=90, window_seconds=360)
    returns = empyrical_returns(equity)
    expected_sharpe = empyrical.sharpe_ratio(returns, annualization=HOURS_PER_YEAR)
    expected_sortino = empyrical.sortino_ratio(returns, annualization=HOURS_PER_YEAR)
    if figures.sharpe_ratio is None:  # no dispersion: empyrical says inf or nan, we say unknown
        assert np.std(returns) < 1e-12 or not math.isfinite(expected_sharpe)
    else:
        assert figures.sharpe_ratio == pytest.approx(expected_sharpe, rel=1e-6, abs=1e-6)
    if figures.sortino_ratio is None:  # no period below 0: empyrical divides by zero
        assert (returns >= 0).all() or not math.isfinite(expected_sortino)
    else:
        assert figures.sortino_ratio == pytest.approx(expected_sortino, rel=1e-6, abs=1e-6)
    assert float(figures.max_drawdown) == pytest.approx(-empyrical.max_drawdown(returns), rel=1e-9, abs=1e-12)

    trades = pd.Series([float(p) for p in pnls], dtype=float)
    assert figures.trades == len(trades)
    assert float(figures.total_pnl) == pytest.approx(trades.sum(), abs=1e-6)
    if trades.empty:
        assert figures.win_rate is None
    else:
        assert float(figures.win_rate) == pytest.approx((trades > 0).mean())
    if (trades < 0).any():
        assert float(figures.profit_factor) == pytest.approx(trades[trades > 0].sum() / -trades[trades < 0].sum())
    else:
        assert figures.profit_factor is None
    assert figures.exposure_time == 0.25


def test_performance_figures_when_too_few_points_or_no_losses_then_none_never_inf_or_nan():
    empty = performance_figures([], [])
    assert empty == PerformanceFigures(win_rate=None, sharpe_ratio=None, sortino_ratio=None, max_drawdown=None,
                                       profit_factor=None, total_pnl=D("0"), trades=0, exposure_time=None)
    # Two points are one return: no dispersion can be measured.
    two = performance_figures(hourly(["100", "90"]), [D("-10")])
    assert (two.sharpe_ratio, two.sortino_ratio, two.max_drawdown) == (None, None, D("0.1"))
    assert (two.win_rate, two.profit_factor) == (D("0"), D("0"))
    # Steady gains: no dispersion below zero, no losing trade.
    rising = performance_figures(hourly(["100", "101", "103", "106"]), [D("1"), D("2")])
    assert rising.sortino_ratio is None and rising.profit_factor is None and rising.max_drawdown == 0
    assert rising.sharpe_ratio is not None and rising.sharpe_ratio > 0
    flat = performance_figures(hourly(["100", "100", "100"]), [])
    assert flat.sharpe_ratio is None and flat.sortino_ratio is None
    # Equity at or below zero has no return: ratios unknown, the drawdown still measured.
    bust = performance_figures(hourly(["100", "0", "50"]), [])
    assert bust.sharpe_ratio is None and bust.max_drawdown == 1


def test_performance_figures_when_points_unsorted_then_sorted_by_time():
    points = hourly(["100", "110", "99", "108.9"])
    assert performance_figures(list(reversed(points)), []) == performance_figures(points, [])


def test_periods_per_year_when_24_7_then_365_days():
    assert periods_per_year_for(3600) == HOURS_PER_YEAR == 8760
    assert periods_per_year_for(60) == MINUTES_PER_YEAR == 525600
    assert periods_per_year_for(86400) == 365
    with pytest.raises(ValueError):
        periods_per_year_for(0)


def test_performance_figures_when_float_equity_then_same_figures_as_decimal():
    equity = random_equity(11, 200)
    exact = performance_figures([(T0 + timedelta(hours=i), e) for i, e in enumerate(equity)], [])
    fast = performance_figures([(T0 + timedelta(hours=i), float(e)) for i, e in enumerate(equity)], [])
    assert fast.sharpe_ratio == exact.sharpe_ratio and fast.sortino_ratio == exact.sortino_ratio
    assert fast.max_drawdown == pytest.approx(exact.max_drawdown, rel=D("1e-12"))
