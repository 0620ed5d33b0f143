"""Candles for a backtest: the seeded synthetic market, or candles stored in the `candles` table."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from tinywindow.exceptions import MarketDataUnavailable, ValidationError
from trading.feeds.base import Candle, epoch_seconds, floor_time, require_aware, timeframe_seconds

__all__ = ["bar_count", "candles_stored", "candles_synthetic"]

_PAGE = 10_000  # the synthetic feed's MAX_LIMIT


def bar_count(start: datetime, end: datetime, timeframe: str) -> int:
    """Bars opening in [start, end) on the epoch-aligned grid of `timeframe`."""
    step = timeframe_seconds(timeframe)
    first = epoch_seconds(require_aware(start, "start"))
    first += -first % step
    last = epoch_seconds(require_aware(end, "end"))
    return max(0, (last - first + step - 1) // step)


def candles_synthetic(*, symbol: str, timeframe: str, start: datetime, end: datetime, seed: int,
                      progress: Callable[[int], None] | None = None) -> list[Candle]:
    """Synthetic candles opening in [start, end) (the feed every process shares for `seed`)."""
    from trading.feeds.synthetic import SyntheticFeed

    feed = SyntheticFeed(seed=seed)
    step = timedelta(seconds=timeframe_seconds(timeframe))
    total = bar_count(start, end, timeframe)
    first_open = floor_time(require_aware(start, "start") + step - timedelta(microseconds=1), timeframe)
    out: list[Candle] = []
    while len(out) < total:
        limit = min(_PAGE, total - len(out))
        page_end = first_open + step * (len(out) + limit)  # close of the page's last candle
        out.extend(feed.candles(symbol, timeframe, limit=limit, end=page_end))
        if progress is not None:
            progress(limit)
    return out


def candles_stored(*, symbol: str, timeframe: str, start: datetime, end: datetime,
                   exchange: str | None = None) -> list[Candle]:
    """Stored candles opening in [start, end), oldest first, read in one streamed query.

    `exchange` None: whichever exchange stored the symbol (refused when several did, as the
    replay feed does).
    """
    from trading.models import Candle as CandleRow
    from trading.selectors import candle_exchanges

    timeframe_seconds(timeframe)
    if exchange is None:
        exchanges = candle_exchanges(symbol=symbol, timeframe=timeframe)
        if len(exchanges) > 1:
            raise ValidationError(f"{symbol} {timeframe} candles are stored for several exchanges "
                                  f"({', '.join(exchanges)}); choose one with --exchange", field="exchange")
        if not exchanges:
            raise MarketDataUnavailable(f"no {symbol} {timeframe} candles are stored")
        exchange = exchanges[0]
    rows = (
        CandleRow.objects.filter(exchange=exchange, symbol=symbol, timeframe=timeframe, ts__gte=start, ts__lt=end)
        .order_by("ts").values_list("ts", "open", "high", "low", "close", "volume")
    )
    # values_list + iterator: no model instances for what can be a million rows.
    return [Candle(*row) for row in rows.iterator(chunk_size=20_000)]
