"""Parsing candle CSVs: layouts, timestamps, and row errors that name the line."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tinywindow.exceptions import ValidationError
from trading.services.market_data import candles_parse_csv, market_identity, parse_timestamp

NOW = datetime(2025, 1, 2, tzinfo=UTC)
D = Decimal


def test_parse_when_header_in_any_order_then_columns_found_by_name() -> None:
    lines = [
        "volume,close,timestamp,open,low,high,trades\n",
        "12.5,101,2025-01-01T00:01:00Z,100,99.5,101.5,7\n",
        "3,100.25,2025-01-01T00:00:00+00:00,101,100,101.75,2\n",
    ]
    first, second = candles_parse_csv(lines, timeframe="1m", now=NOW)
    assert first.ts == datetime(2025, 1, 1, tzinfo=UTC)  # sorted oldest first
    assert (first.open, first.high, first.low, first.close, first.volume) == (
        D(101), D("101.75"), D(100), D("100.25"), D(3))
    assert second.close == D(101)


def test_parse_when_headerless_binance_dump_then_first_six_columns() -> None:
    lines = ["1735689600000,100,101,99,100.5,10,1735689659999,1000,5,1,1,0\n"]
    (candle,) = candles_parse_csv(lines, timeframe="1m", now=NOW)
    assert candle.ts == datetime(2025, 1, 1, tzinfo=UTC) and candle.close == D("100.5")


@pytest.mark.parametrize(("raw", "expected"), [
    ("1735689600", datetime(2025, 1, 1, tzinfo=UTC)),  # seconds
    ("1735689600000", datetime(2025, 1, 1, tzinfo=UTC)),  # milliseconds
    ("1735689600000000", datetime(2025, 1, 1, tzinfo=UTC)),  # microseconds
    ("2025-01-01T01:00:00+01:00", datetime(2025, 1, 1, tzinfo=UTC)),
])
def test_timestamp_when_epoch_or_iso_then_utc(raw, expected) -> None:
    assert parse_timestamp(raw) == expected


def test_parse_when_bad_rows_then_one_error_listing_every_bad_line() -> None:
    lines = [
        "ts,open,high,low,close,volume\n",
        "2025-01-01T00:00:00Z,100,101,99,100,1\n",
        "2025-01-01T00:01:00,100,101,99,100,1\n",  # naive
        "2025-01-01T00:02:00Z,100,99,98,100,1\n",  # high below open
        "2025-01-01T00:03:30Z,100,101,99,100,1\n",  # not aligned to 1m
        "2025-01-01T00:04:00Z,abc,101,99,100,1\n",  # not a number
        "2025-01-01T00:00:00Z,100,101,99,100,1\n",  # repeats line 2
        "2025-01-01T00:05:00Z,100,101,99,100\n",  # a column short
        "2025-01-01T00:06:00Z,100,101,99,100,-1\n",  # negative volume
        "2025-01-03T00:00:00Z,100,101,99,100,1\n",  # after `now`: not closed
    ]
    with pytest.raises(ValidationError) as info:
        candles_parse_csv(lines, timeframe="1m", now=NOW)
    message = info.value.message
    assert message.startswith("8 bad row(s); nothing was imported:")
    for expected in (
        "line 3: time '2025-01-01T00:01:00' has no timezone",
        "line 4: high 99 is below open/close/low",
        "line 5: time 2025-01-01T00:03:30+00:00 is not the open time of a 60s candle",
        "line 6: open 'abc' is not a number",
        "line 7: time 2025-01-01T00:00:00+00:00 repeats line 2",
        "line 8: expected at least 6 columns, got 5",
        "line 9: volume -1 is negative",
        "line 10: candle 2025-01-03T00:00:00+00:00 has not closed yet",
    ):
        assert expected in message


def test_parse_when_header_lacks_a_column_or_file_empty_then_clear_error() -> None:
    with pytest.raises(ValidationError, match="lacks column"):
        candles_parse_csv(["ts,open,high,low,close\n"], timeframe="1m", now=NOW)
    with pytest.raises(ValidationError, match="holds no candles"):
        candles_parse_csv(["ts,open,high,low,close,volume\n", "\n"], timeframe="1m", now=NOW)


def test_parse_when_too_many_decimals_then_refused_not_rounded() -> None:
    with pytest.raises(ValidationError, match="more than 10 decimal places"):
        candles_parse_csv(["2025-01-01T00:00:00Z,1,1,1,1,0.00000000001\n"], timeframe="1m", now=NOW)


def test_identity_when_lowercase_symbol_then_normalised_and_bad_ids_refused() -> None:
    assert market_identity(exchange="Binance", symbol="btc/usdt", timeframe="1m") == ("binance", "BTC/USDT", "1m")
    with pytest.raises(ValidationError) as info:
        market_identity(exchange="binance", symbol="BTCUSDT", timeframe="1m")
    assert info.value.field == "symbol"
    with pytest.raises(ValidationError) as info:
        market_identity(exchange="binance", symbol="BTC/USDT", timeframe="2m")
    assert info.value.field == "timeframe"
