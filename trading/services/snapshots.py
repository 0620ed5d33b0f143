"""Portfolio valuation, snapshots (the runbook's "Position Summary") and their thinning.

`portfolio_valuation` is the one place equity is computed: the snapshot task stores it and
the drawdown breaker reads it. It costs a constant number of queries whatever the number of
agents and positions: agents, positions, and the marks of each feed in bulk
(`feed_last_prices`: one statement for all symbols of a replay/ccxt feed, none for the
synthetic feed). tests/integration/test_snapshots.py counts them at 1x1 and 100x10.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max
from django.utils import timezone

from tinywindow.fields import ZERO
from trading.feeds import feed_for, feed_last_prices
from trading.models import Agent, Order, PortfolioSnapshot, Position
from trading.order_states import OPEN_STATUSES
from trading.services.positions import unrealized_pnl

MONEY = Decimal("0.00000001")


def _money(value: Decimal) -> str:
    return str(value.quantize(MONEY))


@dataclass
class AgentValuation:
    """One agent's book at the valuation time (average cost, marked to the feed's last price)."""

    agent_id: int
    name: str
    capital: Decimal
    realized: Decimal = ZERO
    unrealized: Decimal = ZERO
    cost_basis: Decimal = ZERO
    gross: Decimal = ZERO
    net: Decimal = ZERO
    open_positions: int = 0
    open_orders: int = 0

    @property
    def equity(self) -> Decimal:
        return self.capital + self.realized + self.unrealized

    @property
    def cash(self) -> Decimal:
        return self.capital + self.realized - self.cost_basis

    def as_json(self) -> dict:
        return {
            "agent_id": self.agent_id, "agent": self.name, "capital": _money(self.capital),
            "equity": _money(self.equity), "cash": _money(self.cash), "realized_pnl": _money(self.realized),
            "unrealized_pnl": _money(self.unrealized), "gross_exposure": _money(self.gross),
            "net_exposure": _money(self.net), "open_positions": self.open_positions, "open_orders": self.open_orders,
        }


@dataclass
class Valuation:
    capital: Decimal = ZERO
    realized: Decimal = ZERO
    unrealized: Decimal = ZERO
    cost_basis: Decimal = ZERO
    gross: Decimal = ZERO
    net: Decimal = ZERO
    positions: list[dict] = field(default_factory=list)
    agents: dict[int, AgentValuation] = field(default_factory=dict)

    @property
    def equity(self) -> Decimal:
        return self.capital + self.realized + self.unrealized

    @property
    def cash(self) -> Decimal:
        return self.capital + self.realized - self.cost_basis


def portfolio_valuation(*, now: datetime) -> Valuation:
    """Every agent and every open position, marked at `now`. Two queries plus the marks."""
    valuation = Valuation()
    feeds: dict[int, str] = {}
    for agent_id, name, capital, feed in Agent.objects.order_by("id").values_list("id", "name", "capital", "feed"):
        valuation.agents[agent_id] = AgentValuation(agent_id=agent_id, name=name, capital=capital)
        feeds[agent_id] = feed
        valuation.capital += capital
    rows = list(Position.objects.order_by("agent_id", "symbol")
                .values_list("agent_id", "symbol", "quantity", "average_price", "realized_pnl"))
    wanted: dict[str, set[str]] = defaultdict(set)
    for agent_id, symbol, quantity, _, _ in rows:
        if quantity != 0:
            wanted[feeds[agent_id]].add(symbol)
    marks = {(feed, symbol): price for feed, symbols in wanted.items()
             for symbol, price in feed_last_prices(feed_for(feed), symbols, now).items()}
    for agent_id, symbol, quantity, average_price, realized in rows:
        book = valuation.agents[agent_id]
        book.realized += realized
        if quantity == 0:
            continue
        mark = marks[(feeds[agent_id], symbol)]
        pnl = unrealized_pnl(quantity=quantity, average_price=average_price, mark_price=mark)
        value = quantity * mark
        book.cost_basis += quantity * average_price
        book.unrealized += pnl
        book.gross += abs(value)
        book.net += value
        book.open_positions += 1
        valuation.positions.append({
            "agent_id": agent_id, "agent": book.name, "symbol": symbol, "quantity": str(quantity),
            "average_price": _money(average_price), "mark_price": str(mark), "market_value": _money(value),
            "unrealized_pnl": _money(pnl), "realized_pnl": _money(realized),
        })
    # Totals from the agents' books: 100 additions rather than 1000.
    for book in valuation.agents.values():
        valuation.realized += book.realized
        valuation.cost_basis += book.cost_basis
        valuation.unrealized += book.unrealized
        valuation.gross += book.gross
        valuation.net += book.net
    return valuation


def peak_equity(current: Decimal) -> Decimal:
    """Highest equity seen: the snapshots' peak or the current equity, whichever is higher.

    Every row carries the running peak, so thinning old rows never lowers it."""
    previous = PortfolioSnapshot.objects.aggregate(peak=Max("peak_equity"))["peak"]
    return max(previous or current, current)


def drawdown_fraction(equity: Decimal, peak: Decimal) -> Decimal:
    return ((peak - equity) / peak) if peak > 0 else ZERO


def portfolio_snapshot_take(*, now: datetime | None = None) -> PortfolioSnapshot:
    """Write one `portfolio_snapshots` row stamped `now`: totals, `positions` (per agent and
    symbol) and `agents` (per agent, the series agent performance reads). Running it twice
    writes two rows a moment apart, which is harmless: readers take the newest, thinning and
    performance take the first of each bucket."""
    now = now or timezone.now()
    valuation = portfolio_valuation(now=now)
    open_orders = 0
    for agent_id, count in (Order.objects.filter(status__in=OPEN_STATUSES).order_by()
                            .values_list("agent_id").annotate(n=Count("id"))):
        open_orders += count
        if agent_id in valuation.agents:
            valuation.agents[agent_id].open_orders = count
    equity = valuation.equity
    peak = peak_equity(equity)
    drawdown = drawdown_fraction(equity, peak)
    snapshot = PortfolioSnapshot.objects.create(
        created_at=now,
        equity=equity.quantize(MONEY), cash=valuation.cash.quantize(MONEY),
        gross_exposure=valuation.gross.quantize(MONEY), net_exposure=valuation.net.quantize(MONEY),
        realized_pnl=valuation.realized.quantize(MONEY), unrealized_pnl=valuation.unrealized.quantize(MONEY),
        peak_equity=peak.quantize(MONEY), drawdown=drawdown.quantize(MONEY), open_orders=open_orders,
        positions=valuation.positions, agents=[book.as_json() for book in valuation.agents.values()],
    )
    # tinywindow_equity & co. are read from this row at scrape time (tinywindow/collectors.py).
    return snapshot


# Rows older than the cutoff keep only the first row of each bucket (buckets aligned to the
# Unix epoch, so hourly buckets are clock hours). Deleting "everything but the first of each
# bucket" is idempotent: a second run finds nothing more to delete.
_THIN_SQL = """
DELETE FROM portfolio_snapshots
WHERE created_at < %(cutoff)s
  AND id NOT IN (
    SELECT DISTINCT ON (date_bin(%(step)s, created_at, TIMESTAMPTZ '1970-01-01 00:00:00+00')) id
    FROM portfolio_snapshots
    WHERE created_at < %(cutoff)s
    ORDER BY date_bin(%(step)s, created_at, TIMESTAMPTZ '1970-01-01 00:00:00+00'), created_at, id
  )
"""


def portfolio_snapshots_thin(*, now: datetime | None = None, keep_all_days: int | None = None,
                             keep_every_seconds: int | None = None) -> int:
    """Delete old snapshots: all rows of the last `keep_all_days` stay (1-minute resolution),
    older ones keep the first row of each `keep_every_seconds` (hourly). Returns rows deleted."""
    now = now or timezone.now()
    keep_all_days = settings.SNAPSHOT_KEEP_ALL_DAYS if keep_all_days is None else keep_all_days
    keep_every_seconds = settings.SNAPSHOT_THIN_KEEP_SECONDS if keep_every_seconds is None else keep_every_seconds
    with connection.cursor() as cursor:
        cursor.execute(_THIN_SQL, {"cutoff": now - timedelta(days=keep_all_days),
                                   "step": timedelta(seconds=keep_every_seconds)})
        return cursor.rowcount
