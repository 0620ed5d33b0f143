"""feed_health: staleness and gaps of a candle window, judged at a given `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tinywindow.exceptions import ValidationError
from trading.feeds.base import Candle
from trading.feeds.health import FeedHealth, Gap, feed_health

T0 = datetime(2025, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def minute_bars(*offsets: int) -> list[Candle]:
    """1m candles opening at T0 + offset minutes."""
    one = Decimal(1)
    return [Candle(T0 + MINUTE * i, one, one, one, one, one) for i in offsets]


def test_health_when_newest_candle_just_closed_then_ok() -> None:
    health = feed_health(minute_bars(0, 1, 2), "1m", now=T0 + MINUTE * 3 + timedelta(seconds=20))
    assert health == FeedHealth(stale=False, age_seconds=20.0, gaps=[], max_age_seconds=120.0)
    assert health.ok and health.describe() == "fresh, no gaps"


def test_health_when_one_candle_late_then_still_fresh() -> None:
    # 90 s after the last close: the next candle is late, which a venue may be; not stale yet.
    health = feed_health(minute_bars(0, 1, 2), "1m", now=T0 + MINUTE * 3 + timedelta(seconds=90))
    assert not health.stale and health.age_seconds == 90.0


def test_health_when_newest_candle_older_than_two_timeframes_then_stale_with_age() -> None:
    health = feed_health(minute_bars(0, 1, 2), "1m", now=T0 + MINUTE * 10)
    assert health.stale and health.age_seconds == 420.0 and not health.ok
    assert health.describe() == "stale: newest candle closed 420s ago (limit 120s)"


def test_health_when_max_age_given_then_it_is_the_limit() -> None:
    now = T0 + MINUTE * 3 + timedelta(seconds=30)
    assert feed_health(minute_bars(0, 1, 2), "1m", now=now, max_age_seconds=10).stale
    assert not feed_health(minute_bars(0, 1, 2), "1m", now=now, max_age_seconds=60).stale


def test_health_when_no_candles_then_stale_without_age() -> None:
    health = feed_health([], "5s", now=T0)
    assert health.stale and health.age_seconds is None and health.gaps == []
    assert health.describe() == "no candles"


def test_health_when_candles_missing_then_each_gap_reported_with_count() -> None:
    health = feed_health(minute_bars(0, 1, 4, 5, 7), "1m", now=T0 + MINUTE * 8)
    assert not health.stale
    assert health.gaps == [
        Gap(start=T0 + MINUTE * 2, end=T0 + MINUTE * 4, missing=2),
        Gap(start=T0 + MINUTE * 6, end=T0 + MINUTE * 7, missing=1),
    ]
    assert health.describe() == (
        "gapped: 3 candle(s) missing in 2 gap(s), first 2 candle(s) missing from "
        "2025-01-01T00:02:00+00:00 to 2025-01-01T00:04:00+00:00"
    )


def test_health_when_stale_and_gapped_then_both_described() -> None:
    health = feed_health(minute_bars(0, 2), "1m", now=T0 + MINUTE * 30)
    assert health.describe().startswith("stale: newest candle closed 1620s ago (limit 120s); gapped: 1 candle(s)")


def test_health_when_now_naive_or_timeframe_unknown_then_validation_error() -> None:
    with pytest.raises(ValidationError):
        feed_health(minute_bars(0), "1m", now=datetime(2025, 1, 1))  # naive on purpose
    with pytest.raises(ValidationError) as info:
        feed_health(minute_bars(0), "7m", now=T0)
    assert info.value.field == "timeframe"
