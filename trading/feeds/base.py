"""What a market-data feed is: candles and a last price, nothing venue-specific.

Pure Python on purpose (no Django): backtests and the synthetic feed use these types outside
the web/worker processes. Prices and volumes are `Decimal`; times are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from tinywindow.exceptions import ValidationError

__all__ = [
    "EPOCH",
    "TIMEFRAME_SECONDS",
    "Candle",
    "Feed",
    "epoch_seconds",
    "floor_time",
    "require_aware",
    "timeframe_seconds",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# ccxt spellings, so an agent's `timeframe` can be handed to a real venue unchanged.
# Read-only: a module-level dict that anyone could mutate would change every feed at once.
TIMEFRAME_SECONDS: Mapping[str, int] = MappingProxyType(
    {
        "1s": 1,
        "5s": 5,
        "10s": 10,
        "15s": 15,
        "30s": 30,
        "1m": 60,
        "3m": 3 * 60,
        "5m": 5 * 60,
        "15m": 15 * 60,
        "30m": 30 * 60,
        "1h": 3600,
        "2h": 2 * 3600,
        "4h": 4 * 3600,
        "6h": 6 * 3600,
        "12h": 12 * 3600,
        "1d": 86400,
    }
)


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV bar. `ts` is the OPEN time (UTC); the bar closes at `ts + timeframe`."""

    ts: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


def timeframe_seconds(timeframe: str) -> int:
    """Length of one candle in seconds; unknown spellings are a user error, not a KeyError."""
    try:
        return TIMEFRAME_SECONDS[timeframe]
    except (KeyError, TypeError):
        allowed = ", ".join(TIMEFRAME_SECONDS)
        raise ValidationError(f"unknown timeframe {timeframe!r}; use one of {allowed}", field="timeframe") from None


def require_aware(at: datetime, field: str) -> datetime:
    """Return `at` in UTC. A naive datetime is ambiguous (local? UTC?), so it is refused."""
    if not isinstance(at, datetime):
        raise ValidationError(f"{field} must be a datetime, got {type(at).__name__}", field=field)
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValidationError(f"{field} must be timezone-aware (UTC), got naive {at.isoformat()}", field=field)
    return at.astimezone(UTC)


def epoch_seconds(at: datetime) -> int:
    """Whole seconds since the Unix epoch, floored, in exact integer arithmetic (no float rounding)."""
    delta = require_aware(at, "at") - EPOCH
    return delta.days * 86400 + delta.seconds


def floor_time(at: datetime, timeframe: str) -> datetime:
    """Open time of the candle containing `at`.

    Candles are aligned to the Unix epoch, like exchanges do, so "1d" candles open at 00:00 UTC
    and a 1m candle always opens on a whole minute.
    """
    step = timeframe_seconds(timeframe)
    seconds = epoch_seconds(require_aware(at, "at"))
    return EPOCH + timedelta(seconds=seconds - seconds % step)


@runtime_checkable
class Feed(Protocol):
    """A source of market data. Implementations: the synthetic feed, ccxt-backed venues, replays."""

    name: str

    def candles(self, symbol: str, timeframe: str, *, limit: int, end: datetime) -> list[Candle]:
        """The last `limit` CLOSED candles whose close time is <= `end`, oldest first.

        Only closed candles: a strategy must never decide on a bar that can still change,
        or a backtest would see a different history than the live run did.
        """
        ...

    def last_price(self, symbol: str, at: datetime) -> Decimal:
        """The traded price at `at` (used as the reference price of market orders)."""
        ...
