"""`python manage.py import_candles FILE --exchange binance --symbol BTC/USDT --timeframe 1m`."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from tinywindow.exceptions import ValidationError
from trading.services.market_data import candles_import_csv


class Command(BaseCommand):
    help = (
        "Import OHLCV candles from a CSV file into the candles table (the replay feed reads them). "
        "Columns: ts,open,high,low,close,volume with a header (ts: ISO 8601 with a zone, or epoch "
        "s/ms/us), or Binance's headerless kline layout. Every row is checked first; one bad row "
        "and nothing is written. Re-importing overwrites the same candles."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV file to import, or - for standard input")
        parser.add_argument("--exchange", required=True, help="venue the candles come from, e.g. binance")
        parser.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USDT")
        parser.add_argument("--timeframe", required=True, help="candle length, e.g. 1m, 5m, 1h, 1d")

    def handle(self, *args, file: str, exchange: str, symbol: str, timeframe: str, **options):
        try:
            if file == "-":
                report = candles_import_csv(lines=sys.stdin, exchange=exchange, symbol=symbol, timeframe=timeframe)
            else:
                with open(file, newline="", encoding="utf-8-sig") as stream:
                    report = candles_import_csv(lines=stream, exchange=exchange, symbol=symbol, timeframe=timeframe)
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror or exc}", returncode=2) from exc
        except UnicodeDecodeError as exc:
            raise CommandError(f"{file} is not UTF-8 text: {exc}", returncode=2) from exc
        except ValidationError as exc:
            # Bad input: exit code 2, as for every ValidationError (tinywindow/exceptions.py).
            raise CommandError(f"{file}: {exc.message}", returncode=2) from exc
        self.stdout.write(
            f"imported {report.rows} {symbol} {timeframe} candle(s) for {exchange} "
            f"({report.created} new, {report.updated} updated), {report.first.isoformat()} .. {report.last.isoformat()}"
        )
