"""Reads of trading data (services write, selectors read). Candles come back as feed `Candle`s."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Count, Exists, OuterRef, QuerySet

from tinywindow.rows import CompiledQuery, constant_in_filter
from trading.feeds.base import Candle, require_aware, timeframe_seconds
from trading.models import Agent, AgentPerformance, AgentStatus, Fill, Order, PortfolioSnapshot, Position
from trading.models import Candle as CandleRow
from trading.order_states import OPEN_STATUSES, OrderStatus


def _trim(value: Decimal) -> Decimal:
    """Drop the column's padding zeros (60000.1200000000 -> 60000.12) without going to exponent form."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def orders_waiting_for_venue(*, exchange: Any, since: Any, besides: Any) -> QuerySet[Order]:
    """`pending` orders for the venue `exchange`, created since `since`, other than `besides`:
    what a delivery of `execute_order` may send with its own (group commit: the claim in
    trading.services.orders, and the look before it in `order_status`). Arguments may be
    values or `OuterRef`s."""
    # `pending` written into the SQL: as a parameter, the prepared EXISTS in `order_status` settled
    # on a plan that scans the whole orders table (tinywindow.rows.constant_in).
    return Order.objects.filter(constant_in_filter("status", [OrderStatus.PENDING]), exchange=exchange,
                                created_at__gte=since).exclude(pk=besides)


@dataclass(frozen=True)
class OrderStatusRead:
    status: str | None  # None: no such order
    others_pending: bool  # other orders wait for the same venue (`orders_waiting_for_venue`)


def order_status(order_id: int, *, pending_since: datetime) -> OrderStatusRead:
    """The order's status and whether other `pending` orders created since `pending_since` wait
    for its venue: one query, no model built. Every `execute_order` delivery asks it first:
    under a backlog most find their order done, and with no backlog the delivery skips the
    group-commit claim (a tick's order usually travels alone)."""
    rows = _ORDER_STATUS.rows(order_id=order_id, since=pending_since)
    return OrderStatusRead(*rows[0]) if rows else OrderStatusRead(None, False)


# Every delivery asks it: compiled once (tinywindow.rows).
_ORDER_STATUS = CompiledQuery(
    lambda order_id, since: Order.objects.filter(pk=order_id).values_list(
        "status", Exists(orders_waiting_for_venue(exchange=OuterRef("exchange"), since=since, besides=OuterRef("pk")))),
    order_id=int, since=datetime)


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


def candle_exchanges_by_symbol(*, symbols: Iterable[str]) -> dict[str, list[str]]:
    """{symbol: exchanges that stored candles of it} for several symbols in one query."""
    found: dict[str, list[str]] = {}
    rows = CandleRow.objects.filter(symbol__in=list(symbols)).order_by().values_list("symbol", "exchange").distinct()
    for symbol, exchange in rows:
        found.setdefault(symbol, []).append(exchange)
    return {symbol: sorted(exchanges) for symbol, exchanges in found.items()}


@dataclass(frozen=True)
class LastClose:
    timeframe: str
    ts: datetime
    close: Decimal


# For each (exchange, symbol): the newest candle closed by `at` of each timeframe (an index seek
# each, through LATERAL), keeping the finest timeframe that has one. One statement for any number
# of symbols: the portfolio snapshot marks 1000 positions with it.
_LAST_CLOSES_SQL = """
SELECT DISTINCT ON (p.exchange, p.symbol) p.exchange, p.symbol, t.timeframe, c.ts, c.close
FROM unnest(%(exchanges)s::text[], %(symbols)s::text[]) AS p(exchange, symbol)
CROSS JOIN unnest(%(timeframes)s::text[], %(seconds)s::int[]) AS t(timeframe, seconds)
CROSS JOIN LATERAL (
    SELECT ts, close FROM candles
    WHERE exchange = p.exchange AND symbol = p.symbol AND timeframe = t.timeframe
      AND ts <= %(at)s::timestamptz - make_interval(secs => t.seconds)
    ORDER BY ts DESC LIMIT 1
) c
ORDER BY p.exchange, p.symbol, t.seconds
"""


def candles_last_closes(*, pairs: Iterable[tuple[str, str]], timeframes: Iterable[str],
                        at: datetime) -> dict[tuple[str, str], LastClose]:
    """{(exchange, symbol): the close of the newest candle closed at or before `at`, in the finest
    of `timeframes` that has one}. Pairs without any such candle are left out. One query."""
    pairs = sorted(set(pairs))
    frames = sorted(set(timeframes), key=timeframe_seconds)
    if not pairs or not frames:
        return {}
    params = {"exchanges": [e for e, _ in pairs], "symbols": [s for _, s in pairs], "timeframes": frames,
              "seconds": [timeframe_seconds(f) for f in frames], "at": require_aware(at, "at")}
    with connection.cursor() as cursor:
        cursor.execute(_LAST_CLOSES_SQL, params)
        return {(exchange, symbol): LastClose(timeframe, ts, _trim(close))
                for exchange, symbol, timeframe, ts, close in cursor.fetchall()}


def candle_timeframes(*, exchange: str, symbol: str) -> list[str]:
    """Timeframes stored for (exchange, symbol), finest first."""
    names = (
        CandleRow.objects.filter(exchange=exchange, symbol=symbol).order_by().values_list("timeframe", flat=True)
        .distinct()
    )
    return sorted(set(names), key=timeframe_seconds)


# --- operator reads (API, admin banner, CLI) ---------------------------------------------------------


def agents_list(*, status: str | None = None) -> QuerySet[Agent]:
    """Agents with their performance row and beat schedule (one query)."""
    agents = Agent.objects.select_related("performance", "periodic_task", "periodic_task__interval").order_by("id")
    return agents.filter(status=status) if status else agents


def agent_status_counts() -> dict[str, int]:
    """{status: number of agents} for every status, zeros included."""
    counts = dict(Agent.objects.order_by().values_list("status").annotate(n=Count("id")))
    return {status: counts.get(status, 0) for status in AgentStatus.values}


def orders_list(*, agent_id: int | None = None, symbol: str | None = None, status: str | None = None,
                side: str | None = None, origin: str | None = None, created_after: datetime | None = None,
                created_before: datetime | None = None, base: QuerySet | None = None) -> QuerySet[Order]:
    """Orders, newest first, filtered by whatever is given (created_after inclusive, created_before exclusive).
    `base`: the orders to start from instead of every order with its agent, e.g. a prepared
    values_list() (the API's row writer: its columns are resolved once, not per request)."""
    orders = (Order.objects.select_related("agent") if base is None else base).order_by("-created_at", "-id")
    filters = {"agent_id": agent_id, "symbol": symbol, "status": status, "side": side, "origin": origin,
               "created_at__gte": created_after, "created_at__lt": created_before}
    return orders.filter(**{k: v for k, v in filters.items() if v is not None})


def orders_open_count() -> int:
    return Order.objects.filter(status__in=OPEN_STATUSES).count()


def fills_list(*, agent_id: int | None = None, order_id: int | None = None, symbol: str | None = None,
               executed_after: datetime | None = None, executed_before: datetime | None = None) -> QuerySet[Fill]:
    fills = Fill.objects.select_related("order").order_by("-executed_at", "-id")
    filters = {"agent_id": agent_id, "order_id": order_id, "symbol": symbol,
               "executed_at__gte": executed_after, "executed_at__lt": executed_before}
    return fills.filter(**{k: v for k, v in filters.items() if v is not None})


def positions_list(*, agent_id: int | None = None, symbol: str | None = None,
                   open_only: bool = False) -> QuerySet[Position]:
    positions = Position.objects.select_related("agent").order_by("agent_id", "symbol")
    filters = {"agent_id": agent_id, "symbol": symbol}
    positions = positions.filter(**{k: v for k, v in filters.items() if v is not None})
    return positions.exclude(quantity=0) if open_only else positions


def portfolio_snapshots_list(*, created_after: datetime | None = None, created_before: datetime | None = None,
                             totals_only: bool = False) -> QuerySet[PortfolioSnapshot]:
    """Snapshots, newest first; `totals_only` leaves each one's per-position and per-agent lists in
    the database: they hold a row per agent (about 150 bytes each), so a page of 100 snapshots at
    10,000 agents would read and send over 100 MB."""
    snapshots = PortfolioSnapshot.objects.order_by("-created_at", "-id")
    if totals_only:
        snapshots = snapshots.defer("positions", "agents")
    filters = {"created_at__gte": created_after, "created_at__lt": created_before}
    return snapshots.filter(**{k: v for k, v in filters.items() if v is not None})


def portfolio_snapshot_latest(*, totals_only: bool = False) -> PortfolioSnapshot | None:
    """The newest snapshot; `totals_only` leaves its per-position and per-agent lists in the
    database (they grow with the book; the desk's status shows totals only)."""
    rows = PortfolioSnapshot.objects.order_by("-created_at", "-id")
    return (rows.defer("positions", "agents") if totals_only else rows).first()


def agent_performance_list(*, agent_id: int | None = None) -> QuerySet[AgentPerformance]:
    rows = AgentPerformance.objects.select_related("agent").order_by("agent_id")
    return rows.filter(agent_id=agent_id) if agent_id is not None else rows
