"""RsiReversion and DonchianBreakout on hand-built candles, checked against hand computations.

Wilder's RSI is also checked against the worked example StockCharts publishes for it (the
14-period table of "RSI" in ChartSchool), an independent computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tinywindow.exceptions import ValidationError
from trading.feeds.base import Candle
from trading.strategies.base import load_strategy
from trading.strategies.donchian_breakout import DonchianBreakout
from trading.strategies.rsi_reversion import RsiReversion, wilder_rsi

D = Decimal
T0 = datetime(2025, 6, 1, tzinfo=UTC)
ZERO = D(0)


def bars(rows: Sequence[tuple[str, str, str]]) -> list[Candle]:
    """5 s candles from (high, low, close); open = previous close (or the close, first)."""
    out, prev = [], D(rows[0][2])
    for i, (high, low, close) in enumerate(rows):
        out.append(Candle(T0 + timedelta(seconds=5 * i), prev, D(high), D(low), D(close), D(1)))
        prev = D(close)
    return out


def closes(values: Sequence[str | int]) -> list[Candle]:
    out, prev = [], D(values[0])
    for i, raw in enumerate(values):
        close = D(raw)
        out.append(Candle(T0 + timedelta(seconds=5 * i), prev, max(prev, close), min(prev, close), close, D(1)))
        prev = close
    return out


# -- Wilder's RSI ------------------------------------------------------------------------------


def test_rsi_when_computed_by_hand_then_equal() -> None:
    # changes +1, -0.5, +1.5. Seed (first 2): gain 0.5, loss 0.25. Next: gain (0.5+1.5)/2 = 1,
    # loss (0.25+0)/2 = 0.125. RS = 8, RSI = 100 - 100/9 = 88.888...
    rsi = wilder_rsi([D(10), D(11), D("10.5"), D(12)], 2)
    assert rsi.quantize(D("0.0001")) == D("88.8889")


# StockCharts' RSI(14) worked example: closes, and the RSI it publishes from the 15th close on.
STOCKCHARTS_CLOSES = (
    "44.3389 44.0902 44.1497 43.6124 44.3278 44.8264 45.0955 45.4245 45.8433 46.0826 45.8931 46.0328 "
    "45.614 46.282 46.282 46.0028 46.0328 46.4116 46.2222 45.6439 46.2122 46.2521 45.7137 46.4515 45.7835 "
    "45.3548 44.0288 44.1783 44.2181 44.5672 43.4205 42.6628 43.1314"
)
STOCKCHARTS_RSI = (
    "70.53 66.32 66.55 69.41 66.36 57.97 62.93 63.26 56.06 62.38 54.71 50.42 39.99 41.46 41.87 45.46 37.30 33.08 37.77"
)


def test_rsi_when_stockcharts_worked_example_then_matches_published_values() -> None:
    series = [D(x) for x in STOCKCHARTS_CLOSES.split()]
    published = STOCKCHARTS_RSI.split()
    computed = [str(wilder_rsi(series[:n], 14).quantize(D("0.01"))) for n in range(15, len(series) + 1)]
    assert computed == published


@pytest.mark.parametrize(("values", "expected"), [
    (["1", "2", "3"], D(100)),  # gains only
    (["3", "2", "1"], D(0)),  # losses only
    (["5", "5", "5"], D(50)),  # no movement: neutral, not a division by zero
])
def test_rsi_when_one_sided_then_extremes_or_neutral(values, expected) -> None:
    assert wilder_rsi([D(v) for v in values], 2) == expected


def test_rsi_when_too_few_closes_then_value_error() -> None:
    with pytest.raises(ValueError, match="needs 3 closes"):
        wilder_rsi([D(1), D(2)], 2)


# -- RsiReversion.decide -----------------------------------------------------------------------


def test_decide_when_rsi_below_oversold_then_long_with_numbers_in_reason() -> None:
    strategy = RsiReversion(period=2, oversold="30", exit_level="50", exposure="0.5")
    assert strategy.warmup == 11
    # Flat, then two falls: no gain at all, so RSI = 0.
    decision = strategy.decide(closes([100] * 9 + [99, 98]), ZERO)
    assert decision.target_exposure == D("0.5")
    assert decision.reason == "RSI(2)=0.00, last close 98 < oversold 30: hold 50% long"


def test_decide_when_rsi_above_exit_then_flat() -> None:
    strategy = RsiReversion(period=2, oversold="30", exit_level="50", exposure="0.5")
    decision = strategy.decide(closes([100] * 9 + [101, 102]), D("1"))
    assert decision.target_exposure == ZERO
    assert decision.reason == "RSI(2)=100.00, last close 102 > exit 50: hold 0% (flat)"


def test_decide_when_rsi_between_levels_then_keeps_position() -> None:
    # By hand: changes 0 (x8), +1, -1. Averages stay 0 through the zeros; after +1: gain 0.5,
    # loss 0; after -1: gain 0.25, loss 0.5. RS = 0.5, RSI = 100 - 100/1.5 = 33.33.
    strategy = RsiReversion(period=2, oversold="30", exit_level="50")
    decision = strategy.decide(closes([100] * 9 + [101, 100]), D("0.3"))
    assert decision.target_exposure is None
    assert decision.reason == "RSI(2)=33.33, last close 100 between oversold 30 and exit 50: keep position (long)"


def test_decide_when_more_candles_than_warmup_then_only_the_last_warmup_count() -> None:
    # Live ticks and backtests may pass different amounts of history: the RSI must not change.
    strategy = RsiReversion(period=2)
    tail = closes([100] * 9 + [101, 100])
    longer = closes([90, 120, 80, 130] + [100] * 9 + [101, 100])
    assert strategy.decide(longer, ZERO) == strategy.decide(tail, ZERO)


def test_decide_when_warming_up_then_no_opinion() -> None:
    decision = RsiReversion(period=3).decide(closes([100] * 10), ZERO)
    assert decision.target_exposure is None
    assert decision.reason == "warming up: 10 of 16 candles"


@pytest.mark.parametrize(("params", "field"), [
    ({"oversold": "50", "exit_level": "50"}, "exit_level"),
    ({"oversold": "60", "exit_level": "40"}, "exit_level"),
    ({"period": 1}, "period"),
    ({"oversold": "0"}, "oversold"),
    ({"exit_level": "101"}, "exit_level"),
    ({"exposure": "1.5"}, "exposure"),
    ({"lookback": 3}, "params"),
])
def test_rsi_params_when_invalid_then_validation_error_names_field(params, field) -> None:
    with pytest.raises(ValidationError) as info:
        RsiReversion(**params)
    assert info.value.field == field


# -- DonchianBreakout.decide -------------------------------------------------------------------


def test_decide_when_close_above_entry_high_then_long() -> None:
    strategy = DonchianBreakout(entry=3, exit=2, exposure="0.8")
    assert strategy.warmup == 4
    candles = bars([("101", "99", "100"), ("102", "98", "101"), ("103", "100", "102"), ("104.5", "102", "104")])
    decision = strategy.decide(candles, ZERO)
    assert decision.target_exposure == D("0.8")
    assert decision.reason == "close 104 > 3-bar high 103: breakout, hold 80% long"


def test_decide_when_close_below_exit_low_then_flat() -> None:
    strategy = DonchianBreakout(entry=3, exit=2)
    # The exit channel is the 2 bars before the last: lows 98 and 100, so 98.
    candles = bars([("101", "95", "100"), ("102", "98", "101"), ("103", "100", "102"), ("102", "97", "97.5")])
    decision = strategy.decide(candles, D(1))
    assert decision.target_exposure == ZERO
    assert decision.reason == "close 97.5 < 2-bar low 98: breakdown, hold 0% (flat)"


def test_decide_when_close_inside_channel_then_keeps_position() -> None:
    strategy = DonchianBreakout(entry=3, exit=2)
    candles = bars([("101", "95", "100"), ("102", "98", "101"), ("103", "100", "102"), ("103", "99", "103")])
    decision = strategy.decide(candles, ZERO)
    # 103 equals the high: a breakout needs a close strictly above it.
    assert decision.target_exposure is None
    assert decision.reason == "close 103 inside 3-bar high 103 / 2-bar low 98: keep position (flat)"


def test_decide_when_warming_up_then_no_opinion_donchian() -> None:
    decision = DonchianBreakout(entry=5, exit=3).decide(closes([1, 2, 3]), ZERO)
    assert decision.target_exposure is None
    assert decision.reason == "warming up: 3 of 6 candles"


@pytest.mark.parametrize(("params", "field"), [
    ({"entry": 0}, "entry"), ({"exit": 1001}, "exit"), ({"exposure": "0"}, "exposure"), ({"entry": True}, "entry"),
])
def test_donchian_params_when_invalid_then_validation_error_names_field(params, field) -> None:
    with pytest.raises(ValidationError) as info:
        DonchianBreakout(**params)
    assert info.value.field == field


@pytest.mark.parametrize("path", [
    "trading.strategies.rsi_reversion.RsiReversion", "trading.strategies.donchian_breakout.DonchianBreakout",
])
def test_load_when_dotted_path_and_json_params_then_params_round_trip(path) -> None:
    first = load_strategy(path, {"exposure": 0.25})
    again = load_strategy(path, first.params)
    assert first.params == again.params and first.params["exposure"] == "0.25"
