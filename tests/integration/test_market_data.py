"""Stored candles: CSV import (service and command), and the replay feed reading them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.helpers import manage
from tinywindow.exceptions import MarketDataUnavailable, ValidationError
from trading.feeds import feed_for
from trading.feeds.replay import ReplayFeed
from trading.models import Candle as CandleRow
from trading.services.market_data import candles_import_csv, candles_parse_csv, candles_store

D = Decimal
T0 = datetime(2024, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def csv_lines(count: int, *, start: datetime = T0, base: int = 100) -> list[str]:
    lines = ["ts,open,high,low,close,volume\n"]
    for i in range(count):
        price = D(base) + D(i) / 4
        lines.append(f"{(start + MINUTE * i).isoformat()},{price},{price + 1},{price - 1},{price + D('0.5')},{i}\n")
    return lines


@pytest.mark.django_db
def test_import_when_file_good_then_every_row_stored_and_counted():
    report = candles_import_csv(lines=csv_lines(30), exchange="binance", symbol="BTC/USDT", timeframe="1m")
    assert (report.rows, report.created, report.updated) == (30, 30, 0)
    assert (report.first, report.last) == (T0, T0 + MINUTE * 29)
    assert CandleRow.objects.filter(exchange="binance", symbol="BTC/USDT", timeframe="1m").count() == 30


@pytest.mark.django_db
def test_import_when_run_twice_with_corrections_then_rows_updated_not_duplicated():
    candles_import_csv(lines=csv_lines(10), exchange="binance", symbol="BTC/USDT", timeframe="1m")
    corrected = csv_lines(12)
    corrected[1] = f"{T0.isoformat()},100,105,90,104,7\n"
    report = candles_import_csv(lines=corrected, exchange="binance", symbol="BTC/USDT", timeframe="1m")
    assert (report.created, report.updated) == (2, 10)
    assert CandleRow.objects.count() == 12
    assert CandleRow.objects.get(ts=T0).close == D(104)


@pytest.mark.django_db
def test_import_when_one_row_bad_then_validation_error_and_nothing_written():
    lines = csv_lines(50)
    lines[40] = lines[40].replace(",", ",x", 1)  # line 41: the open is not a number
    with pytest.raises(ValidationError, match="line 41: open"):
        candles_import_csv(lines=lines, exchange="binance", symbol="BTC/USDT", timeframe="1m")
    assert not CandleRow.objects.exists()


@pytest.mark.django_db
def test_import_command_when_good_file_then_summary(tmp_path):
    path = tmp_path / "btc.csv"
    path.write_text("".join(csv_lines(5)))
    from io import StringIO

    out = StringIO()
    call_command("import_candles", str(path), "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
                 stdout=out)
    assert "imported 5 BTC/USDT 1m candle(s) for binance (5 new, 0 updated)" in out.getvalue()


@pytest.mark.django_db
def test_import_command_when_file_missing_or_rows_bad_then_command_error_exit_2(tmp_path):
    with pytest.raises(CommandError, match="cannot read") as info:
        call_command("import_candles", str(tmp_path / "nope.csv"), exchange="binance", symbol="BTC/USDT",
                     timeframe="1m")
    assert info.value.returncode == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,open,high,low,close,volume\n2024-01-01T00:00:00Z,100,90,95,99,1\n")
    with pytest.raises(CommandError, match="line 2: high 90 is below") as info:
        call_command("import_candles", str(bad), exchange="binance", symbol="BTC/USDT", timeframe="1m")
    assert info.value.returncode == 2


def test_import_command_when_run_as_a_user_with_bad_rows_then_exit_2_clear_stderr_nothing_written(
        worker_env, tmp_path):
    path = tmp_path / "eth.csv"
    lines = csv_lines(20)
    lines[7] = "2024-01-01 00:06:00,1,1,1,1,1\n"  # naive time on line 8
    path.write_text("".join(lines))
    result = manage("import_candles", str(path), "--exchange", "binance", "--symbol", "ETH/USDT", "--timeframe",
                    "1m", env=worker_env)
    assert result.returncode == 2, result.stderr
    assert "1 bad row(s); nothing was imported" in result.stderr
    assert "line 8: time '2024-01-01 00:06:00' has no timezone" in result.stderr
    assert "Traceback" not in result.stderr
    assert not CandleRow.objects.exists()
    path.write_text("".join(csv_lines(20)))
    result = manage("import_candles", str(path), "--exchange", "binance", "--symbol", "ETH/USDT", "--timeframe",
                    "1m", env=worker_env)
    assert result.returncode == 0, result.stderr
    assert CandleRow.objects.filter(symbol="ETH/USDT").count() == 20


# -- replay feed ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_replay_when_candles_stored_then_returns_exactly_them_oldest_first():
    lines = csv_lines(30)
    expected = candles_parse_csv(lines, timeframe="1m")
    candles_import_csv(lines=lines, exchange="binance", symbol="BTC/USDT", timeframe="1m")
    feed = feed_for("replay:binance")
    end = T0 + MINUTE * 30  # the close of the last candle
    assert feed.candles("BTC/USDT", "1m", limit=100, end=end) == expected
    assert feed.candles("BTC/USDT", "1m", limit=5, end=end) == expected[-5:]
    # A candle that has not closed by `end` is not returned: it could still change.
    assert feed.candles("BTC/USDT", "1m", limit=3, end=end - timedelta(seconds=1)) == expected[-4:-1]
    assert feed.candles("BTC/USDT", "5m", limit=3, end=end) == []
    assert feed.candles("ETH/USDT", "1m", limit=3, end=end) == []


@pytest.mark.django_db
def test_replay_last_price_when_stored_then_close_of_last_closed_candle_else_unavailable():
    candles_import_csv(lines=csv_lines(10), exchange="binance", symbol="BTC/USDT", timeframe="1m")
    feed = ReplayFeed("binance")
    assert feed.last_price("BTC/USDT", T0 + MINUTE * 3 + timedelta(seconds=30)) == D("101.0")
    with pytest.raises(MarketDataUnavailable):
        feed.last_price("BTC/USDT", T0)
    with pytest.raises(MarketDataUnavailable):
        feed.last_price("DOGE/USDT", T0 + MINUTE * 5)


@pytest.mark.django_db
def test_replay_without_exchange_when_one_venue_stored_it_then_used_when_several_then_refuses():
    candles_import_csv(lines=csv_lines(5), exchange="binance", symbol="BTC/USDT", timeframe="1m")
    feed = feed_for("replay")
    assert len(feed.candles("BTC/USDT", "1m", limit=10, end=T0 + MINUTE * 5)) == 5
    candles_store(exchange="kraken", symbol="BTC/USDT", timeframe="1m",
                  candles=candles_parse_csv(csv_lines(2), timeframe="1m"))
    with pytest.raises(ValidationError, match=r"several exchanges \(binance, kraken\)"):
        feed.candles("BTC/USDT", "1m", limit=10, end=T0 + MINUTE * 5)


def test_feed_for_when_name_unknown_then_validation_error_listing_names():
    for name in ("bloomberg", "ccxt:", "replay:Bad Name"):
        with pytest.raises(ValidationError) as info:
            feed_for(name)
        assert info.value.field == "feed"
