"""Portfolio valuation and snapshots (the runbook's "Position Summary").

`portfolio_valuation` is the one place equity is computed: the snapshot task stores it and
the drawdown breaker reads it. One query per kind of data, none per position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import Max, Sum
from django.utils import timezone

from tinywindow.fields import ZERO
from trading.feeds import feed_for
from trading.models import Agent, Order, PortfolioSnapshot, Position
from trading.order_states import OPEN_STATUSES
from trading.services.positions import unrealized_pnl

MONEY = Decimal("0.00000001")


@dataclass
class Valuation:
    capital: Decimal = ZERO
    realized: Decimal = ZERO
    unrealized: Decimal = ZERO
    cost_basis: Decimal = ZERO
    gross: Decimal = ZERO
    net: Decimal = ZERO
    positions: list[dict] = field(default_factory=list)

    @property
    def equity(self) -> Decimal:
        return self.capital + self.realized + self.unrealized

    @property
    def cash(self) -> Decimal:
        return self.capital + self.realized - self.cost_basis


def portfolio_valuation(*, now: datetime) -> Valuation:
    valuation = Valuation(
        capital=Agent.objects.aggregate(total=Sum("capital"))["total"] or ZERO,
        realized=Position.objects.aggregate(total=Sum("realized_pnl"))["total"] or ZERO,
    )
    marks: dict[tuple[str, str], Decimal] = {}
    for position in Position.objects.exclude(quantity=0).select_related("agent"):
        key = (position.agent.feed, position.symbol)
        if key not in marks:
            marks[key] = feed_for(position.agent.feed).last_price(position.symbol, now)
        mark = marks[key]
        pnl = unrealized_pnl(quantity=position.quantity, average_price=position.average_price, mark_price=mark)
        value = position.quantity * mark
        valuation.cost_basis += position.quantity * position.average_price
        valuation.unrealized += pnl
        valuation.gross += abs(value)
        valuation.net += value
        valuation.positions.append({
            "agent_id": position.agent_id, "agent": position.agent.name, "symbol": position.symbol,
            "quantity": str(position.quantity), "average_price": str(position.average_price.quantize(MONEY)),
            "mark_price": str(mark), "unrealized_pnl": str(pnl.quantize(MONEY)),
        })
    return valuation


def peak_equity(current: Decimal) -> Decimal:
    """Highest equity seen: the snapshots' peak or the current equity, whichever is higher."""
    previous = PortfolioSnapshot.objects.aggregate(peak=Max("peak_equity"))["peak"]
    return max(previous or current, current)


def drawdown_fraction(equity: Decimal, peak: Decimal) -> Decimal:
    return ((peak - equity) / peak) if peak > 0 else ZERO


def portfolio_snapshot_take(*, now: datetime | None = None) -> PortfolioSnapshot:
    """Write one `portfolio_snapshots` row."""
    now = now or timezone.now()
    valuation = portfolio_valuation(now=now)
    equity = valuation.equity
    peak = peak_equity(equity)
    drawdown = drawdown_fraction(equity, peak)
    snapshot = PortfolioSnapshot.objects.create(
        equity=equity.quantize(MONEY), cash=valuation.cash.quantize(MONEY),
        gross_exposure=valuation.gross.quantize(MONEY), net_exposure=valuation.net.quantize(MONEY),
        realized_pnl=valuation.realized.quantize(MONEY), unrealized_pnl=valuation.unrealized.quantize(MONEY),
        peak_equity=peak.quantize(MONEY), drawdown=drawdown.quantize(MONEY),
        open_orders=Order.objects.filter(status__in=OPEN_STATUSES).count(), positions=valuation.positions,
    )
    # tinywindow_equity & co. are read from this row at scrape time (tinywindow/collectors.py).
    return snapshot
