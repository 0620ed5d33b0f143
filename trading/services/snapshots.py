"""Portfolio snapshots: the whole book at one moment, for the runbook's "Position Summary"."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from tinywindow import metrics
from tinywindow.fields import ZERO
from trading.feeds import feed_for
from trading.models import Agent, Order, PortfolioSnapshot, Position
from trading.order_states import OPEN_STATUSES
from trading.services.positions import unrealized_pnl

MONEY = Decimal("0.00000001")


def portfolio_snapshot_take(*, now: datetime | None = None) -> PortfolioSnapshot:
    """Write one `portfolio_snapshots` row. One query per kind of data, none per position."""
    now = now or timezone.now()
    capital = Agent.objects.aggregate(total=Sum("capital"))["total"] or ZERO
    realized = Position.objects.aggregate(total=Sum("realized_pnl"))["total"] or ZERO
    open_positions = list(Position.objects.exclude(quantity=0).select_related("agent"))
    entries = []
    cost_basis = unrealized = gross = net = ZERO
    for position in open_positions:
        mark = feed_for(position.agent.feed).last_price(position.symbol, now)
        pnl = unrealized_pnl(quantity=position.quantity, average_price=position.average_price, mark_price=mark)
        value = position.quantity * mark
        cost_basis += position.quantity * position.average_price
        unrealized += pnl
        gross += abs(value)
        net += value
        entries.append({
            "agent_id": position.agent_id, "agent": position.agent.name, "symbol": position.symbol,
            "quantity": str(position.quantity), "average_price": str(position.average_price.quantize(MONEY)),
            "mark_price": str(mark), "unrealized_pnl": str(pnl.quantize(MONEY)),
        })
    equity = capital + realized + unrealized
    previous = PortfolioSnapshot.objects.order_by("-created_at").values_list("peak_equity", flat=True).first()
    peak = max(previous or equity, equity)
    drawdown = ((peak - equity) / peak) if peak > 0 else ZERO
    snapshot = PortfolioSnapshot.objects.create(
        equity=equity.quantize(MONEY), cash=(capital + realized - cost_basis).quantize(MONEY),
        gross_exposure=gross.quantize(MONEY), net_exposure=net.quantize(MONEY), realized_pnl=realized.quantize(MONEY),
        unrealized_pnl=unrealized.quantize(MONEY), peak_equity=peak.quantize(MONEY), drawdown=drawdown.quantize(MONEY),
        open_orders=Order.objects.filter(status__in=OPEN_STATUSES).count(), positions=entries,
    )
    metrics.EQUITY.set(float(equity))
    metrics.REALIZED_PNL.set(float(realized))
    metrics.UNREALIZED_PNL.set(float(unrealized))
    metrics.GROSS_EXPOSURE.set(float(gross))
    metrics.DRAWDOWN.set(float(drawdown))
    metrics.LAST_SNAPSHOT.set(now.timestamp())
    return snapshot
