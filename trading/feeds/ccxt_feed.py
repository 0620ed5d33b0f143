"""A real venue's candles through ccxt, cached in the `candles` table and fetched incrementally.

Each call first asks the venue only for what the cache lacks (candles after the newest stored
one, or before the oldest when a longer history is wanted), stores them, then answers from
the database. So a tick every few seconds costs at most one small request per new candle, a
restarted worker starts warm, and a backtest over the same period reads the same bars.

ccxt itself stays behind `trading.gateways.ccxt.fetch_ohlcv` (the one ccxt adapter): this
module never sees a ccxt exception. When the venue cannot be reached the feed answers from
the cache, and `feed_health` then reports the data as stale: the tick makes no order and
says why, and the stale-data breaker sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from tinywindow.exceptions import ExchangeError, MarketDataUnavailable
from trading.feeds.base import Candle, floor_time, require_aware, timeframe_seconds
from trading.selectors import candles_last_closes, candles_window
from trading.services.market_data import candles_sync, market_identity

__all__ = ["LAST_PRICE_TIMEFRAME", "CcxtFeed"]

logger = logging.getLogger(__name__)

LAST_PRICE_TIMEFRAME = "1m"
"""Candles used for `last_price`: the finest timeframe every major venue serves."""


class CcxtFeed:
    """Implements `Feed` for one ccxt exchange id (feed name `ccxt:<exchange>`)."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.name = f"ccxt:{exchange}"

    def __repr__(self) -> str:
        return f"CcxtFeed({self.exchange!r})"

    def candles(self, symbol: str, timeframe: str, *, limit: int, end: datetime) -> list[Candle]:
        """The last `limit` closed candles up to `end`, oldest first; fetches what the cache lacks."""
        exchange, symbol, timeframe = market_identity(exchange=self.exchange, symbol=symbol, timeframe=timeframe)
        now = timezone.now()
        end = min(require_aware(end, "end"), now)
        start = floor_time(end, timeframe) - timedelta(seconds=timeframe_seconds(timeframe) * max(limit, 0))
        try:
            candles_sync(exchange=exchange, symbol=symbol, timeframe=timeframe, start=start, end=end, now=now)
        except ExchangeError as exc:
            # Serve the cache: if it is old, feed_health says "stale" and the tick trades nothing.
            logger.warning("%s: could not refresh %s %s candles, answering from the cache: %s", self.name, symbol,
                           timeframe, exc)
        return candles_window(exchange=exchange, symbol=symbol, timeframe=timeframe, end=end, limit=limit)

    def last_price(self, symbol: str, at: datetime) -> Decimal:
        """Close of the newest closed 1m candle at `at` (the same number a backtest would use)."""
        window = self.candles(symbol, LAST_PRICE_TIMEFRAME, limit=1, end=at)
        if not window:
            raise MarketDataUnavailable(f"{self.name}: no {symbol} price at {require_aware(at, 'at').isoformat()}")
        return window[-1].close

    def last_prices(self, symbols: Iterable[str], at: datetime) -> dict[str, Decimal]:
        """`last_price` of several symbols: one cache query for all; only a symbol whose newest
        closed 1m candle is not cached yet goes to the venue (through `last_price`). The snapshot
        marks every position with this, so a warm cache costs one query, not one per symbol."""
        at = min(require_aware(at, "at"), timezone.now())
        keys = {symbol: market_identity(exchange=self.exchange, symbol=symbol, timeframe=LAST_PRICE_TIMEFRAME)[:2]
                for symbol in set(symbols)}
        cached = candles_last_closes(pairs=keys.values(), timeframes=[LAST_PRICE_TIMEFRAME], at=at)
        step = timedelta(seconds=timeframe_seconds(LAST_PRICE_TIMEFRAME))
        newest_closed = floor_time(at, LAST_PRICE_TIMEFRAME) - step
        prices = {}
        for symbol, key in keys.items():
            found = cached.get(key)
            prices[symbol] = found.close if found and found.ts >= newest_closed else self.last_price(symbol, at)
        return prices
