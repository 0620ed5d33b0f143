"""Replay feed: candles stored in the `candles` table (CSV import, download_candles, ccxt cache).

It returns exactly what is stored, never fills holes or invents a forming candle, so a
backtest over it sees the history as recorded; `feed_health` reports the gaps.

`ReplayFeed("binance")` reads the candles stored for binance (feed name `replay:binance`).
`ReplayFeed()` (feed name `replay`) reads whichever exchange stored the symbol, and refuses
to guess when several did.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from tinywindow.exceptions import MarketDataUnavailable, ValidationError
from trading.feeds.base import TIMEFRAME_SECONDS, Candle, require_aware, timeframe_seconds
from trading.selectors import candle_exchanges, candle_exchanges_by_symbol, candles_last_closes, candles_window

__all__ = ["ReplayFeed"]


class ReplayFeed:
    """Implements `Feed` over stored candles."""

    def __init__(self, exchange: str | None = None) -> None:
        self.exchange = exchange
        self.name = f"replay:{exchange}" if exchange else "replay"

    def __repr__(self) -> str:
        return f"ReplayFeed({self.exchange!r})"

    def _exchange_for(self, symbol: str, timeframe: str | None) -> str | None:
        if self.exchange:
            return self.exchange
        exchanges = candle_exchanges(symbol=symbol, timeframe=timeframe)
        if len(exchanges) > 1:
            raise ValidationError(
                f"replay: {symbol} {timeframe or ''} is stored for several exchanges ({', '.join(exchanges)}); "
                f"use feed 'replay:<exchange>'",
                field="feed",
            )
        return exchanges[0] if exchanges else None

    def candles(self, symbol: str, timeframe: str, *, limit: int, end: datetime) -> list[Candle]:
        """The last `limit` stored candles closed at or before `end`, oldest first (maybe fewer)."""
        timeframe_seconds(timeframe)  # an unknown timeframe is an error, not an empty answer
        exchange = self._exchange_for(symbol, timeframe)
        if exchange is None:
            return []
        return candles_window(exchange=exchange, symbol=symbol, timeframe=timeframe, end=end, limit=limit)

    def last_price(self, symbol: str, at: datetime) -> Decimal:
        """Close of the newest candle closed at or before `at`, in the finest timeframe that has one."""
        return self.last_prices([symbol], at)[symbol]

    def last_prices(self, symbols: Iterable[str], at: datetime) -> dict[str, Decimal]:
        """`last_price` of several symbols in two queries at most, whatever their number (the
        portfolio snapshot marks every position with this)."""
        at = require_aware(at, "at")
        symbols = sorted(set(symbols))
        if self.exchange:
            pairs = [(self.exchange, symbol) for symbol in symbols]
        else:
            stored = candle_exchanges_by_symbol(symbols=symbols)
            pairs = []
            for symbol in symbols:
                exchanges = stored.get(symbol, [])
                if len(exchanges) > 1:
                    raise ValidationError(
                        f"replay: {symbol} is stored for several exchanges ({', '.join(exchanges)}); "
                        f"use feed 'replay:<exchange>'", field="feed")
                if not exchanges:
                    raise MarketDataUnavailable(f"{self.name}: no candles stored for {symbol}")
                pairs.append((exchanges[0], symbol))
        closes = candles_last_closes(pairs=pairs, timeframes=TIMEFRAME_SECONDS, at=at)
        prices = {}
        for exchange, symbol in pairs:
            found = closes.get((exchange, symbol))
            if found is None:
                raise MarketDataUnavailable(f"{self.name}: no {symbol} candle closed by {at.isoformat()}")
            prices[symbol] = found.close
        return prices
