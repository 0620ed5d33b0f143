"""Stored candles: CSV import, incremental fetch from a venue (ccxt), and the upsert they share.

Every write goes through `candles_store`, an upsert on (exchange, symbol, timeframe, ts): a
re-import or a re-fetch corrects values instead of duplicating rows, and two workers caching
the same candle at once cannot collide.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from tinywindow.exceptions import ValidationError
from tinywindow.fields import DECIMAL_PLACES, MAX_DIGITS
from trading.feeds.base import EPOCH, Candle, epoch_seconds, floor_time, require_aware, timeframe_seconds
from trading.models import Candle as CandleRow
from trading.selectors import candle_bounds

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 20
"""A bad file lists at most this many row errors: enough to see the pattern, not a wall of text."""
FETCH_PAGE = 1000
"""Candles asked per venue request (Binance's maximum for klines; others cap lower on their own)."""

_EXCHANGE_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9._-]*/[A-Z0-9][A-Z0-9._-]*(:[A-Z0-9._-]+)?")
_TS_NAMES = ("ts", "timestamp", "time", "datetime", "date", "open_time")
_VALUE_NAMES = ("open", "high", "low", "close", "volume")
_ONE = Decimal(1)


@dataclass(frozen=True)
class ImportReport:
    rows: int
    created: int
    updated: int
    first: datetime
    last: datetime


@dataclass(frozen=True)
class SyncReport:
    fetched: int  # candles the venue returned inside the asked range
    requests: int  # venue calls made (0: the cache already covered the range)


def market_identity(*, exchange: str, symbol: str, timeframe: str) -> tuple[str, str, str]:
    """Validate and normalise the key of a candle series: (exchange id, unified symbol, timeframe)."""
    exchange = (exchange or "").strip().lower()
    if not _EXCHANGE_ID.fullmatch(exchange):
        raise ValidationError(f"exchange must be a venue id like 'binance', got {exchange!r}", field="exchange")
    symbol = (symbol or "").strip().upper()
    if len(symbol) > 40 or not _SYMBOL.fullmatch(symbol):
        raise ValidationError(f"symbol must look like 'BTC/USDT', got {symbol!r}", field="symbol")
    timeframe_seconds(timeframe)
    return exchange, symbol, timeframe


# --- CSV ----------------------------------------------------------------------------------------


def parse_timestamp(raw: str) -> datetime:
    """A candle time from a CSV cell: epoch seconds/milliseconds/microseconds, or ISO 8601 with a zone.

    Epoch integers are told apart by size (below 1e11: seconds, i.e. before the year 5138;
    below 1e14: milliseconds; else microseconds, as Binance's recent dumps use). A naive ISO
    time is refused: local or UTC cannot be guessed.
    """
    text = raw.strip()
    if re.fullmatch(r"\d{1,19}", text):
        number = int(text)
        if number < 10**11:
            return EPOCH + timedelta(seconds=number)
        if number < 10**14:
            return EPOCH + timedelta(milliseconds=number)
        return EPOCH + timedelta(microseconds=number)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {text!r} is neither epoch milliseconds nor an ISO 8601 time") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"time {text!r} has no timezone (add 'Z' or '+00:00')")
    return parsed.astimezone(UTC)


def _parse_decimal(name: str, raw: str) -> Decimal:
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ValueError(f"{name} {raw.strip()!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{name} {raw.strip()!r} is not a finite number")
    # The column holds MAX_DIGITS digits, DECIMAL_PLACES after the point; the database would
    # round silently, so a value that does not fit is an error here instead.
    if abs(value) >= _ONE.scaleb(MAX_DIGITS - DECIMAL_PLACES):
        raise ValueError(f"{name} {raw.strip()} is too large")
    if value != value.quantize(_ONE.scaleb(-DECIMAL_PLACES)):
        raise ValueError(f"{name} {raw.strip()} has more than {DECIMAL_PLACES} decimal places")
    return value


def _columns(header: list[str]) -> dict[str, int] | None:
    """Column positions from a header row, or None if the row is data (headerless file)."""
    first = header[0].strip() if header else ""
    if re.fullmatch(r"[\d.:+TZ -]+", first) and any(ch.isdigit() for ch in first):
        return None
    names = [cell.strip().lower() for cell in header]
    positions: dict[str, int] = {}
    for wanted in _TS_NAMES:
        if wanted in names:
            positions["ts"] = names.index(wanted)
            break
    for wanted in _VALUE_NAMES:
        if wanted in names:
            positions[wanted] = names.index(wanted)
    missing = [n for n in ("ts", *_VALUE_NAMES) if n not in positions]
    if missing:
        raise ValidationError(
            f"line 1: header {','.join(header)!r} lacks column(s) {', '.join(missing)} "
            f"(expected ts,open,high,low,close,volume; 'timestamp' or 'time' also name the time)",
            field="file",
        )
    return positions


def _parse_row(cells: list[str], positions: dict[str, int], step: int, now: datetime) -> Candle:
    needed = max(positions.values()) + 1
    if len(cells) < needed:
        raise ValueError(f"expected at least {needed} columns, got {len(cells)}")
    ts = parse_timestamp(cells[positions["ts"]])
    if epoch_seconds(ts) % step or ts.microsecond:
        raise ValueError(f"time {ts.isoformat()} is not the open time of a {step}s candle (not aligned)")
    if ts + timedelta(seconds=step) > now:
        raise ValueError(f"candle {ts.isoformat()} has not closed yet (closes after {now.isoformat()})")
    o, h, low, c, v = (_parse_decimal(name, cells[positions[name]]) for name in _VALUE_NAMES)
    if min(o, h, low, c) <= 0:
        raise ValueError("prices must be positive")
    if v < 0:
        raise ValueError(f"volume {v} is negative")
    if h < max(o, c, low):
        raise ValueError(f"high {h} is below open/close/low (open {o}, close {c}, low {low})")
    if low > min(o, c):
        raise ValueError(f"low {low} is above open/close (open {o}, close {c})")
    return Candle(ts=ts, open=o, high=h, low=low, close=c, volume=v)


def candles_parse_csv(lines: Iterable[str], *, timeframe: str, now: datetime | None = None) -> list[Candle]:
    """Every row of a candle CSV, validated; oldest first.

    With a header, columns are found by name (ts/timestamp/time, open, high, low, close,
    volume; extra columns are ignored). Without one, the first six columns are taken in that
    order, which is the layout of Binance's kline dumps. Any bad row makes the whole file fail
    with a ValidationError listing the bad lines, so nothing is ever half-imported.
    """
    step = timeframe_seconds(timeframe)
    now = require_aware(now or timezone.now(), "now")
    reader = csv.reader(lines)
    errors: list[str] = []
    candles: list[Candle] = []
    seen: dict[datetime, int] = {}
    positions: dict[str, int] | None = None
    default_positions = {name: i for i, name in enumerate(("ts", *_VALUE_NAMES))}
    error_count = 0
    for cells in reader:
        line = reader.line_num
        if not cells or all(not cell.strip() for cell in cells):
            continue
        if positions is None:
            positions = _columns(cells) or default_positions
            if positions is not default_positions:
                continue  # that was the header
        try:
            candle = _parse_row(cells, positions, step, now)
            if candle.ts in seen:
                raise ValueError(f"time {candle.ts.isoformat()} repeats line {seen[candle.ts]}")
        except ValueError as exc:
            error_count += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(f"line {line}: {exc}")
            continue
        seen[candle.ts] = line
        candles.append(candle)
    if error_count:
        more = f"\n... and {error_count - len(errors)} more bad row(s)" if error_count > len(errors) else ""
        raise ValidationError(
            f"{error_count} bad row(s); nothing was imported:\n" + "\n".join(errors) + more, field="file"
        )
    if not candles:
        raise ValidationError("the file holds no candles", field="file")
    candles.sort(key=lambda c: c.ts)
    return candles


# --- storage ------------------------------------------------------------------------------------


def candles_store(*, exchange: str, symbol: str, timeframe: str, candles: Sequence[Candle]) -> int:
    """Upsert candles (insert, or overwrite the values of an existing bar). Returns how many were written."""
    if not candles:
        return 0
    rows = [
        CandleRow(exchange=exchange, symbol=symbol, timeframe=timeframe, ts=c.ts, open=c.open, high=c.high,
                  low=c.low, close=c.close, volume=c.volume)
        for c in candles
    ]
    CandleRow.objects.bulk_create(
        rows,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["exchange", "symbol", "timeframe", "ts"],
        update_fields=["open", "high", "low", "close", "volume"],
    )
    return len(rows)


def candles_import_csv(*, lines: Iterable[str], exchange: str, symbol: str, timeframe: str,
                       now: datetime | None = None) -> ImportReport:
    """Import a candle CSV: every row is validated first, then all are written in one transaction."""
    exchange, symbol, timeframe = market_identity(exchange=exchange, symbol=symbol, timeframe=timeframe)
    candles = candles_parse_csv(lines, timeframe=timeframe, now=now)
    first, last = candles[0].ts, candles[-1].ts
    with transaction.atomic():
        in_range = CandleRow.objects.filter(
            exchange=exchange, symbol=symbol, timeframe=timeframe, ts__gte=first, ts__lte=last
        )
        before = in_range.count()
        candles_store(exchange=exchange, symbol=symbol, timeframe=timeframe, candles=candles)
        created = in_range.count() - before
    logger.info("imported %s %s %s candles for %s (%s new)", len(candles), symbol, timeframe, exchange, created)
    return ImportReport(rows=len(candles), created=created, updated=len(candles) - created, first=first, last=last)


# --- fetching from a venue ----------------------------------------------------------------------


def candles_missing_ranges(*, exchange: str, symbol: str, timeframe: str, start: datetime,
                           end: datetime) -> list[tuple[datetime, datetime]]:
    """Open-time ranges [a, b) to fetch so the cache covers [start, end): before the oldest stored
    candle and after the newest one. Holes between stored candles are not re-fetched: a venue
    that had no trades there has no candle to give, and asking again every tick would not help."""
    step = timedelta(seconds=timeframe_seconds(timeframe))
    if start >= end:
        return []
    bounds = candle_bounds(exchange=exchange, symbol=symbol, timeframe=timeframe)
    if bounds is None:
        return [(start, end)]
    oldest, newest = bounds
    ranges = []
    if start < oldest:
        ranges.append((start, min(oldest, end)))
    tail = max(start, newest + step)
    if tail < end:
        ranges.append((tail, end))
    return ranges


def candles_sync(*, exchange: str, symbol: str, timeframe: str, start: datetime, end: datetime | None = None,
                 now: datetime | None = None, progress: Callable[[int], None] | None = None) -> SyncReport:
    """Fetch from the venue (ccxt) the CLOSED candles opening in [start, end) that are not stored yet.

    Pages are stored as they arrive, each in its own transaction: a download interrupted half
    way keeps what it had and the next run resumes after the newest stored candle. `progress`
    is called with the number of candle slots each page advanced (for a progress bar).
    Raises TemporaryExchangeError when the venue cannot be reached.
    """
    from trading.gateways.ccxt import fetch_ohlcv  # the one module that talks ccxt

    exchange, symbol, timeframe = market_identity(exchange=exchange, symbol=symbol, timeframe=timeframe)
    step = timedelta(seconds=timeframe_seconds(timeframe))
    now = require_aware(now or timezone.now(), "now")
    start = floor_time(require_aware(start, "start"), timeframe)
    # A candle is closed once its open time + step has passed: the last closed one opens at
    # floor(now) - step, so the range of open times ends (exclusive) at floor(now).
    closed_end = floor_time(now, timeframe)
    end = min(require_aware(end, "end"), closed_end) if end is not None else closed_end
    fetched = requests = 0
    for range_start, range_end in candles_missing_ranges(
        exchange=exchange, symbol=symbol, timeframe=timeframe, start=start, end=end
    ):
        cursor = range_start
        while cursor < range_end:
            page = fetch_ohlcv(exchange, symbol, timeframe, since=cursor, limit=FETCH_PAGE)
            requests += 1
            keep = [c for c in page if cursor <= c.ts < range_end]
            with transaction.atomic():
                candles_store(exchange=exchange, symbol=symbol, timeframe=timeframe, candles=keep)
            fetched += len(keep)
            if not page or page[-1].ts < cursor:
                break  # the venue has nothing more in this range
            advanced_to = min(page[-1].ts + step, range_end)
            if progress is not None:
                progress(int((advanced_to - cursor) / step))
            cursor = advanced_to
    return SyncReport(fetched=fetched, requests=requests)
