"""Rolling counters the breakers read: venue API calls and errors, market-data freshness.

Kept in Redis in per-10-second buckets (expiring on their own), so every process that talks
to a venue adds to the same numbers without a database write per call. If Redis is down the
counts are lost, which only makes the rate breakers blind: the kill switch and the other
breakers do not depend on them.
"""

from __future__ import annotations

import logging
import time

import redis

from tinywindow.redis_client import get_redis

logger = logging.getLogger(__name__)

BUCKET_SECONDS = 10
MAX_WINDOW_SECONDS = 3600
MARKET_DATA_KEY = "tinywindow:market_data:last:{symbol}"


def _bucket(now: float) -> int:
    return int(now // BUCKET_SECONDS)


def api_call_record(*, exchange: str, ok: bool, now: float | None = None) -> None:
    bucket = _bucket(now if now is not None else time.time())
    try:
        pipe = get_redis().pipeline(transaction=False)
        for kind in ("calls",) if ok else ("calls", "errors"):
            key = f"tinywindow:stats:api:{exchange}:{kind}:{bucket}"
            pipe.incr(key)
            pipe.expire(key, MAX_WINDOW_SECONDS + BUCKET_SECONDS)
        pipe.execute()
    except redis.RedisError as exc:
        logger.debug("api stats not recorded: %s", exc)


def api_call_counts(*, exchange: str, window_seconds: int, now: float | None = None) -> tuple[int, int]:
    """(calls, errors) for `exchange` over the last `window_seconds`."""
    last = _bucket(now if now is not None else time.time())
    buckets = range(last - max(1, window_seconds // BUCKET_SECONDS) + 1, last + 1)
    keys = [f"tinywindow:stats:api:{exchange}:{kind}:{b}" for kind in ("calls", "errors") for b in buckets]
    values = get_redis().mget(keys)
    half = len(values) // 2
    calls = sum(int(v) for v in values[:half] if v)
    errors = sum(int(v) for v in values[half:] if v)
    return calls, errors


def api_exchanges_seen(*, window_seconds: int) -> set[str]:
    """Exchanges with API calls recorded recently (the api_error_rate breaker's targets)."""
    exchanges = set()
    for key in get_redis().scan_iter(match="tinywindow:stats:api:*:calls:*", count=500):
        exchanges.add(key.split(":")[3])
    return exchanges


def market_data_seen(*, symbol: str, candle_close_ts: float) -> None:
    """A tick saw market data for `symbol` up to this time (the stale-data breaker reads it)."""
    try:
        get_redis().set(MARKET_DATA_KEY.format(symbol=symbol), str(candle_close_ts), ex=7 * 86400)
    except redis.RedisError as exc:
        logger.debug("market data freshness not recorded: %s", exc)


def market_data_last(*, symbol: str) -> float | None:
    value = get_redis().get(MARKET_DATA_KEY.format(symbol=symbol))
    return float(value) if value else None


def market_data_symbols() -> list[str]:
    prefix = MARKET_DATA_KEY.format(symbol="")
    return [key[len(prefix):] for key in get_redis().scan_iter(match=prefix + "*", count=500)]
