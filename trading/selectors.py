"""Reads of trading data (services write, selectors read). Candles come back as feed `Candle`s."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from trading.feeds.base import Candle, require_aware, timeframe_seconds
from trading.models import Candle as CandleRow


def _trim(value: Decimal) -> Decimal:
    """Drop the column's padding zeros (60000.1200000000 -> 60000.12) without going to exponent form."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def candle_from_row(row: CandleRow) -> Candle:
    return Candle(ts=row.ts, open=_trim(row.open), high=_trim(row.high), low=_trim(row.low),
                  close=_trim(row.close), volume=_trim(row.volume))


def candles_window(*, exchange: str, symbol: str, timeframe: str, end: datetime, limit: int) -> list[Candle]:
    """The last `limit` stored candles that closed at or before `end`, oldest first."""
    end = require_aware(end, "end")
    last_open = end - timedelta(seconds=timeframe_seconds(timeframe))
    rows = (
        CandleRow.objects.filter(exchange=exchange, symbol=symbol, timeframe=timeframe, ts__lte=last_open)
        .order_by("-ts")[: max(0, limit)]
    )
    return [candle_from_row(row) for row in reversed(list(rows))]


def candles_range(*, exchange: str, symbol: str, timeframe: str, start: datetime, end: datetime) -> list[Candle]:
    """Stored candles opening in [start, end), oldest first."""
    rows = CandleRow.objects.filter(
        exchange=exchange, symbol=symbol, timeframe=timeframe, ts__gte=start, ts__lt=end
    ).order_by("ts")
    return [candle_from_row(row) for row in rows]


def candle_bounds(*, exchange: str, symbol: str, timeframe: str) -> tuple[datetime, datetime] | None:
    """(oldest open, newest open) of the stored candles, or None when nothing is stored."""
    from django.db.models import Max, Min

    bounds = CandleRow.objects.filter(exchange=exchange, symbol=symbol, timeframe=timeframe).aggregate(
        oldest=Min("ts"), newest=Max("ts")
    )
    if bounds["oldest"] is None:
        return None
    return bounds["oldest"], bounds["newest"]


def candle_exchanges(*, symbol: str, timeframe: str | None = None) -> list[str]:
    """Exchanges that have stored candles for `symbol` (and `timeframe`, when given)."""
    rows = CandleRow.objects.filter(symbol=symbol)
    if timeframe is not None:
        rows = rows.filter(timeframe=timeframe)
    # order_by() drops the model's default ordering, which would otherwise defeat DISTINCT.
    return sorted(rows.order_by().values_list("exchange", flat=True).distinct())


def candle_timeframes(*, exchange: str, symbol: str) -> list[str]:
    """Timeframes stored for (exchange, symbol), finest first."""
    names = (
        CandleRow.objects.filter(exchange=exchange, symbol=symbol).order_by().values_list("timeframe", flat=True)
        .distinct()
    )
    return sorted(set(names), key=timeframe_seconds)
