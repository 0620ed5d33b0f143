"""Pick a market-data feed by name (an agent's `feed` field).

    synthetic          the seeded synthetic market (offline default)
    replay             candles stored in the database, from whichever exchange stored the symbol
    replay:<exchange>  candles stored for that exchange (CSV import, download_candles, ccxt cache)
    ccxt:<exchange>    a real venue's OHLCV through ccxt, cached in the database

Every feed implements `trading.feeds.base.Feed`; `trading.feeds.health.feed_health` judges
what any of them returns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.conf import settings

from tinywindow.exceptions import ValidationError
from trading.feeds.base import Feed

FEED_NAMES = ("synthetic", "replay", "replay:<exchange>", "ccxt:<exchange>")
_EXCHANGE_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")


@functools.cache
def feed_for(name: str) -> Feed:
    """The feed called `name` (one instance per process: feeds hold no per-call state)."""
    kind, colon, exchange = (name or "").partition(":")
    if colon and not _EXCHANGE_ID.fullmatch(exchange):
        raise ValidationError(f"feed {name!r}: {exchange!r} is not an exchange id like 'binance'", field="feed")
    if name == "synthetic":
        from trading.feeds.synthetic import SyntheticFeed

        return SyntheticFeed(seed=settings.SYNTHETIC_FEED_SEED)
    if kind == "replay":
        from trading.feeds.replay import ReplayFeed

        return ReplayFeed(exchange or None)
    if kind == "ccxt" and exchange:
        from trading.feeds.ccxt_feed import CcxtFeed

        return CcxtFeed(exchange)
    raise ValidationError(f"unknown feed {name!r}; known: {', '.join(FEED_NAMES)}", field="feed")


def feed_last_prices(feed: Feed, symbols: Iterable[str], at: datetime) -> dict[str, Decimal]:
    """{symbol: last price} from `feed`, in bulk where the feed can (`last_prices`: the replay and
    ccxt feeds answer any number of symbols in a constant number of queries); otherwise one
    `last_price` call per symbol (the synthetic feed computes them without I/O)."""
    bulk = getattr(feed, "last_prices", None)
    if bulk is not None:
        return bulk(symbols, at)
    return {symbol: feed.last_price(symbol, at) for symbol in set(symbols)}
