"""`python manage.py download_candles --exchange binance --symbol BTC/USDT --timeframe 1m --since 2024-01-01`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from tinywindow.exceptions import (
    ConfigurationError,
    ExchangeError,
    InvalidOrder,
    TemporaryExchangeError,
    ValidationError,
)
from trading.feeds.base import floor_time, timeframe_seconds
from trading.services.market_data import candles_missing_ranges, candles_sync, market_identity


def _when(raw: str, name: str) -> datetime:
    """A CLI date or time: ISO 8601; without a zone it is taken as UTC (said in --help)."""
    try:
        parsed = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise CommandError(f"--{name} {raw!r} is not a date like 2024-01-01 or 2024-01-01T12:00:00Z",
                           returncode=2) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class Command(BaseCommand):
    help = (
        "Download OHLCV candles from an exchange through ccxt into the candles table (the replay and "
        "ccxt feeds read them). Only candles not stored yet are fetched, so an interrupted download "
        "resumes where it stopped. Needs the exchange to be reachable (or EXCHANGE_API_URL pointing at "
        "the local exchange)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. binance")
        parser.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USDT")
        parser.add_argument("--timeframe", required=True, help="candle length, e.g. 1m, 1h, 1d")
        parser.add_argument("--since", required=True, help="first candle's open time (ISO 8601; UTC if no zone)")
        parser.add_argument("--until", help="stop before this time (ISO 8601; UTC if no zone; default: now)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")

    def handle(self, *args, exchange: str, symbol: str, timeframe: str, since: str, until: str | None,
               no_progress: bool = False, **options):
        try:
            exchange, symbol, timeframe = market_identity(exchange=exchange, symbol=symbol, timeframe=timeframe)
        except ValidationError as exc:
            raise CommandError(exc.message, returncode=2) from exc
        now = timezone.now()
        start = floor_time(_when(since, "since"), timeframe)
        end = min(_when(until, "until"), now) if until else now
        if start >= end:
            raise CommandError(f"--since {start.isoformat()} is not before --until {end.isoformat()}", returncode=2)
        step = timeframe_seconds(timeframe)
        # The bar counts the candle slots still to fetch (what is stored already is skipped).
        ranges = candles_missing_ranges(exchange=exchange, symbol=symbol, timeframe=timeframe, start=start,
                                        end=min(end, floor_time(now, timeframe)))
        missing = sum(int((b - a).total_seconds()) // step for a, b in ranges)
        # tqdm redraws with "\r": write to the raw stream, not Django's line-ending OutputWrapper.
        bar = tqdm(total=missing, unit="candle", desc=f"{exchange} {symbol} {timeframe}", disable=no_progress,
                   file=getattr(self.stderr, "_out", sys.stderr), dynamic_ncols=True)
        try:
            report = candles_sync(exchange=exchange, symbol=symbol, timeframe=timeframe, start=start, end=end, now=now,
                                  progress=bar.update)
        except TemporaryExchangeError as exc:
            raise CommandError(
                f"cannot reach {exchange} ({exc}). Offline? Candles already stored are kept; run the same command "
                f"again to resume.", returncode=1) from exc
        except (ValidationError, ConfigurationError, InvalidOrder) as exc:
            raise CommandError(f"{exchange} {symbol} {timeframe}: {exc}", returncode=2) from exc
        except ExchangeError as exc:
            raise CommandError(f"{exchange} refused: {exc}", returncode=1) from exc
        finally:
            bar.close()
        self.stdout.write(
            f"downloaded {report.fetched} {symbol} {timeframe} candle(s) from {exchange} in {report.requests} "
            f"request(s), {start.isoformat()} .. {end.isoformat()}"
            + ("" if report.requests else " (all already stored)")
        )
