"""The synthetic feed is a pure function of (seed, symbol, time): tests pin that down.

No Django and no database: the feed must be usable from plain backtests.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinywindow.exceptions import ValidationError
from trading.feeds.base import (
    TIMEFRAME_SECONDS,
    Candle,
    Feed,
    floor_time,
    timeframe_seconds,
)
from trading.feeds.synthetic import MAX_LIMIT, SyntheticFeed

REPO_ROOT = Path(__file__).resolve().parents[2]
END = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
MAJORS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")

# Hypothesis inputs: any plausible wall-clock time (microseconds included) and symbol spelling.
times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.just(UTC),
)
symbols = st.one_of(
    st.sampled_from(MAJORS),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-", min_size=1, max_size=12),
)
timeframes = st.sampled_from(sorted(TIMEFRAME_SECONDS))
# Each example computes up to ~100 candles; the default 200 ms deadline would be flaky on CI.
quick = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- timeframes and floor_time ------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeframe", "seconds"),
    [("1s", 1), ("5s", 5), ("30s", 30), ("1m", 60), ("15m", 900), ("1h", 3600), ("12h", 43200), ("1d", 86400)],
)
def test_timeframe_seconds_when_ccxt_spelling_then_length_in_seconds(timeframe: str, seconds: int) -> None:
    assert timeframe_seconds(timeframe) == seconds


@pytest.mark.parametrize("timeframe", ["", "1w", "5", "1M", "60s", None, 5])
def test_timeframe_seconds_when_unknown_then_validation_error_on_timeframe(timeframe: object) -> None:
    with pytest.raises(ValidationError) as excinfo:
        timeframe_seconds(timeframe)  # type: ignore[arg-type]
    assert excinfo.value.field == "timeframe"


def test_timeframe_table_when_mutated_then_refused() -> None:
    with pytest.raises(TypeError):
        TIMEFRAME_SECONDS["2m"] = 120  # type: ignore[index]


def test_floor_time_when_inside_candle_then_open_time_of_that_candle() -> None:
    at = datetime(2025, 6, 1, 12, 7, 33, 250_000, tzinfo=UTC)
    assert floor_time(at, "5s") == datetime(2025, 6, 1, 12, 7, 30, tzinfo=UTC)
    assert floor_time(at, "1m") == datetime(2025, 6, 1, 12, 7, tzinfo=UTC)
    assert floor_time(at, "15m") == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert floor_time(at, "1d") == datetime(2025, 6, 1, tzinfo=UTC)


def test_floor_time_when_other_timezone_then_result_in_utc() -> None:
    at = datetime(2025, 6, 1, 14, 7, 33, tzinfo=timezone(timedelta(hours=2)))
    floored = floor_time(at, "1h")
    assert floored == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert floored.utcoffset() == timedelta(0)


def test_floor_time_when_naive_datetime_then_validation_error() -> None:
    with pytest.raises(ValidationError):
        floor_time(datetime(2025, 6, 1, 12, 0), "1m")


@given(at=times, timeframe=timeframes)
def test_floor_time_when_any_time_then_aligned_and_at_most_one_candle_earlier(at: datetime, timeframe: str) -> None:
    floored = floor_time(at, timeframe)
    step = timedelta(seconds=timeframe_seconds(timeframe))
    assert floored <= at < floored + step
    assert int(floored.timestamp()) % timeframe_seconds(timeframe) == 0


# -- determinism --------------------------------------------------------------------------


def test_candles_when_two_instances_share_a_seed_then_identical() -> None:
    for symbol in MAJORS:
        a = SyntheticFeed(seed=7).candles(symbol, "5s", limit=300, end=END)
        b = SyntheticFeed(seed=7).candles(symbol, "5s", limit=300, end=END)
        assert a == b


def test_candles_when_windows_overlap_then_shared_candles_identical() -> None:
    feed = SyntheticFeed()
    wide = feed.candles("BTC/USDT", "1m", limit=500, end=END)
    narrow = feed.candles("BTC/USDT", "1m", limit=50, end=END - timedelta(minutes=100))
    by_ts = {c.ts: c for c in wide}
    assert all(by_ts[c.ts] == c for c in narrow)


def test_candles_when_seeds_differ_then_prices_differ() -> None:
    a = SyntheticFeed(seed=1).candles("BTC/USDT", "5s", limit=50, end=END)
    b = SyntheticFeed(seed=2).candles("BTC/USDT", "5s", limit=50, end=END)
    assert [c.close for c in a] != [c.close for c in b]


def test_candles_when_symbols_differ_then_paths_differ() -> None:
    feed = SyntheticFeed()
    a = feed.candles("AAA/USDT", "5s", limit=50, end=END)
    b = feed.candles("AAB/USDT", "5s", limit=50, end=END)
    returns_a = [x.close / x.open for x in a]
    returns_b = [x.close / x.open for x in b]
    assert returns_a != returns_b


@quick
@given(symbol=symbols, end=times, shift=st.integers(min_value=0, max_value=40), limit=st.integers(1, 40))
def test_candles_when_queried_in_any_order_or_window_then_same_candle(
    symbol: str, end: datetime, shift: int, limit: int
) -> None:
    # The same candle, reached through a window ending later, must be bit-for-bit equal:
    # there is no state that earlier queries could have advanced.
    feed = SyntheticFeed(seed=3)
    later = feed.candles(symbol, "5s", limit=limit + shift, end=end + timedelta(seconds=5 * shift))
    SyntheticFeed(seed=3).candles(symbol, "1h", limit=3, end=end)  # unrelated query in between
    first = feed.candles(symbol, "5s", limit=limit, end=end)
    assert later[:limit] == first


def test_last_price_when_computed_in_another_process_then_identical() -> None:
    # Guards against anything depending on Python's per-process str hash randomisation.
    code = (
        "import json; from datetime import datetime, UTC;"
        "from trading.feeds.synthetic import SyntheticFeed;"
        "f = SyntheticFeed(seed=11); end = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC);"
        "syms = ['BTC/USDT', 'ETH/USDT', 'SOL/USDT', 'ZZZ/EUR'];"
        "print(json.dumps({s: [str(f.last_price(s, end))]"
        " + [str(c.close) + '|' + str(c.volume) for c in f.candles(s, '1m', limit=5, end=end)] for s in syms}))"
    )
    feed = SyntheticFeed(seed=11)
    end = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    expected = {
        s: [str(feed.last_price(s, end))] + [f"{c.close}|{c.volume}" for c in feed.candles(s, "1m", limit=5, end=end)]
        for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT", "ZZZ/EUR")
    }
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO_ROOT)}
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
        )
        assert json.loads(result.stdout) == expected


# -- shape of the candles -----------------------------------------------------------------


@quick
@given(symbol=symbols, end=times, timeframe=timeframes, limit=st.integers(min_value=1, max_value=60))
def test_candles_when_generated_then_ohlc_invariants_hold(
    symbol: str, end: datetime, timeframe: str, limit: int
) -> None:
    candles = SyntheticFeed().candles(symbol, timeframe, limit=limit, end=end)
    assert len(candles) == limit
    for c in candles:
        assert c.low <= c.open <= c.high
        assert c.low <= c.close <= c.high
        assert c.low > 0
        assert c.volume > 0


@quick
@given(symbol=symbols, end=times, timeframe=timeframes, limit=st.integers(min_value=1, max_value=60))
def test_candles_when_generated_then_closed_contiguous_and_oldest_first(
    symbol: str, end: datetime, timeframe: str, limit: int
) -> None:
    step = timedelta(seconds=timeframe_seconds(timeframe))
    candles = SyntheticFeed().candles(symbol, timeframe, limit=limit, end=end)
    last_close_time = candles[-1].ts + step
    assert last_close_time <= end  # never a candle that is still forming
    assert end - last_close_time < step  # ...but the most recent closed one
    for prev, nxt in itertools.pairwise(candles):
        assert nxt.ts - prev.ts == step
        assert nxt.open == prev.close  # one continuous price path, no gaps between bars


def test_candles_when_end_on_boundary_then_candle_closing_at_end_included() -> None:
    candles = SyntheticFeed().candles("ETH/USDT", "1m", limit=2, end=datetime(2025, 6, 1, 12, 0, tzinfo=UTC))
    assert [c.ts for c in candles] == [
        datetime(2025, 6, 1, 11, 58, tzinfo=UTC),
        datetime(2025, 6, 1, 11, 59, tzinfo=UTC),
    ]


def test_candles_when_end_mid_candle_then_forming_candle_excluded() -> None:
    candles = SyntheticFeed().candles("ETH/USDT", "1m", limit=1, end=datetime(2025, 6, 1, 12, 0, 59, tzinfo=UTC))
    assert candles[0].ts == datetime(2025, 6, 1, 11, 59, tzinfo=UTC)


def test_candles_when_returned_then_money_is_decimal_and_times_utc() -> None:
    for c in SyntheticFeed().candles("SOL/USDT", "5m", limit=20, end=END):
        assert isinstance(c, Candle)
        for value in (c.open, c.high, c.low, c.close, c.volume):
            assert type(value) is Decimal
            assert value.is_finite()
        assert c.ts.utcoffset() == timedelta(0)
        assert c.volume.as_tuple().exponent == -4


def test_candles_when_major_symbol_then_two_decimal_prices_near_known_level() -> None:
    feed = SyntheticFeed()
    levels = {"BTC/USDT": 60000, "ETH/USDT": 3000, "SOL/USDT": 150}
    for symbol, level in levels.items():
        for c in feed.candles(symbol, "1d", limit=30, end=END):
            assert c.close.as_tuple().exponent == -2
            assert level / 2 < c.close < level * 2


def test_candles_when_coarser_timeframe_then_consistent_with_finer_candles() -> None:
    # One price path for all timeframes: a 1m bar opens/closes where its 5s bars do.
    feed = SyntheticFeed()
    minute = feed.candles("BTC/USDT", "1m", limit=1, end=END)[0]
    fives = feed.candles("BTC/USDT", "5s", limit=12, end=END)
    assert fives[0].ts == minute.ts
    assert fives[0].open == minute.open
    assert fives[-1].close == minute.close


def test_last_price_when_at_candle_close_time_then_equals_close() -> None:
    feed = SyntheticFeed()
    candle = feed.candles("BTC/USDT", "5s", limit=1, end=END)[0]
    assert feed.last_price("BTC/USDT", END) == candle.close
    assert type(feed.last_price("BTC/USDT", END + timedelta(microseconds=1))) is Decimal


def test_synthetic_feed_when_checked_against_protocol_then_is_a_feed() -> None:
    assert isinstance(SyntheticFeed(), Feed)
    assert SyntheticFeed().name == "synthetic"


# -- realism ------------------------------------------------------------------------------


def test_prices_when_sampled_over_a_month_then_bps_per_minute_and_percent_per_day() -> None:
    feed = SyntheticFeed()
    minutes = feed.candles("BTC/USDT", "1m", limit=5000, end=END)
    days = feed.candles("BTC/USDT", "1d", limit=120, end=END)
    minute_bps = statistics.pstdev(math.log(c.close / c.open) for c in minutes) * 1e4
    day_pct = statistics.pstdev(math.log(c.close / c.open) for c in days) * 100
    assert 1 < minute_bps < 20
    assert 0.5 < day_pct < 8


def test_regime_when_sampled_over_weeks_then_all_three_regimes_occur() -> None:
    feed = SyntheticFeed()
    seen = {feed.regime("BTC/USDT", END + timedelta(minutes=30 * i)) for i in range(24 * 2 * 21)}
    assert seen == {"calm", "normal", "turbulent"}


def test_volume_when_turbulent_then_higher_than_when_calm_on_average() -> None:
    feed = SyntheticFeed()
    by_regime: dict[str, list[Decimal]] = {"calm": [], "turbulent": []}
    for c in feed.candles("ETH/USDT", "15m", limit=4 * 24 * 21, end=END):
        label = feed.regime("ETH/USDT", c.ts + timedelta(minutes=7, seconds=30))
        if label in by_regime:
            by_regime[label].append(c.volume)
    assert statistics.mean(by_regime["turbulent"]) > statistics.mean(by_regime["calm"])


def test_candles_when_limit_200_then_fast_enough_for_a_5s_tick() -> None:
    feed = SyntheticFeed()
    now = datetime.now(UTC)
    best = min(_timed(lambda: feed.candles("BTC/USDT", "5s", limit=200, end=now)) for _ in range(5))
    assert best < 0.1  # typically ~12 ms; generous so a loaded CI box does not flake


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, True, 2.0, "5"])
def test_candles_when_limit_invalid_then_validation_error_on_limit(limit: object) -> None:
    with pytest.raises(ValidationError) as excinfo:
        SyntheticFeed().candles("BTC/USDT", "5s", limit=limit, end=END)  # type: ignore[arg-type]
    assert excinfo.value.field == "limit"


def test_candles_when_end_naive_then_validation_error_on_end() -> None:
    with pytest.raises(ValidationError) as excinfo:
        SyntheticFeed().candles("BTC/USDT", "5s", limit=5, end=datetime(2025, 1, 1))
    assert excinfo.value.field == "end"


@pytest.mark.parametrize("symbol", ["", "   ", None])
def test_candles_when_symbol_empty_then_validation_error_on_symbol(symbol: object) -> None:
    with pytest.raises(ValidationError) as excinfo:
        SyntheticFeed().candles(symbol, "5s", limit=5, end=END)  # type: ignore[arg-type]
    assert excinfo.value.field == "symbol"


def test_candles_when_timeframe_unknown_then_validation_error_on_timeframe() -> None:
    with pytest.raises(ValidationError) as excinfo:
        SyntheticFeed().candles("BTC/USDT", "7s", limit=5, end=END)
    assert excinfo.value.field == "timeframe"


def test_last_price_when_at_naive_then_validation_error_on_at() -> None:
    with pytest.raises(ValidationError) as excinfo:
        SyntheticFeed().last_price("BTC/USDT", datetime(2025, 1, 1))
    assert excinfo.value.field == "at"


@pytest.mark.parametrize("seed", ["42", 1.5, True])
def test_init_when_seed_not_int_then_validation_error_on_seed(seed: object) -> None:
    with pytest.raises(ValidationError) as excinfo:
        SyntheticFeed(seed=seed)  # type: ignore[arg-type]
    assert excinfo.value.field == "seed"


# -- kept answers (small windows and prices are cached) -----------------------------------


@quick
@given(end=times, symbol=symbols, timeframe=timeframes, limit=st.integers(min_value=1, max_value=64))
def test_candles_when_small_window_is_kept_then_same_as_the_tail_of_a_computed_long_window(
    end: datetime, symbol: str, timeframe: str, limit: int
) -> None:
    feed = SyntheticFeed(seed=11)
    kept = feed.candles(symbol, timeframe, limit=limit, end=end)
    again = feed.candles(symbol, timeframe, limit=limit, end=end)
    computed = SyntheticFeed(seed=11).candles(symbol, timeframe, limit=100, end=end)  # above the kept size
    assert kept == again == computed[-limit:]
    kept.clear()  # a caller changing its list changes nothing kept
    assert feed.candles(symbol, timeframe, limit=limit, end=end) == again


def test_last_price_when_asked_again_or_by_another_seed_then_the_path_of_that_seed() -> None:
    first, other = SyntheticFeed(seed=11), SyntheticFeed(seed=12)
    at = END + timedelta(seconds=17, microseconds=250)
    assert first.last_price("BTC/USDT", at) == SyntheticFeed(seed=11).last_price("BTC/USDT", at)
    assert first.last_price("BTC/USDT", at) != other.last_price("BTC/USDT", at)
    assert first.last_price("BTC/USDT", at) == first._price("BTC/USDT", at.timestamp())  # uncached
