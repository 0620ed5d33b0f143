"""Order management: create (write-ahead), execute, apply venue reports, cancel.

The path of one order (DESIGN.md "One trade, end to end"):
1. `order_create` runs the pre-trade checks and commits the row — `pending` with a unique
   `client_order_id`, or `rejected` with the reason — and only then enqueues execution.
2. `order_execute` (task on the `execution` queue) re-checks the kill switch under the
   trading gate, marks the order `submitted`, calls the gateway, and applies the report.
3. `order_apply_report` turns venue fills into `fills` rows (a replayed trade id is a no-op),
   moves the position under a row lock, and sets status, fees and realized `pnl`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from safety.services.gate import pretrade_refusal, venue_send_permit
from tinywindow import metrics
from tinywindow.exceptions import PermanentExchangeError, SafetyStateUnknown, TradingHalted, ValidationError
from tinywindow.fields import ZERO
from trading.gateways import gateway_for
from trading.gateways.base import Gateway, OrderRequest, VenueOrderReport
from trading.lock_objects import lock_order, lock_position
from trading.models import Agent, Fill, Order, OrderOrigin, OrderSide, OrderType
from trading.order_states import OPEN_STATUSES, OrderStatus, check_transition
from trading.services.positions import position_apply_fill

logger = logging.getLogger(__name__)


def new_client_order_id(agent_id: int) -> str:
    """Unique, and readable enough to find in venue logs: tw-<agent>-<random>."""
    return f"tw-{agent_id}-{uuid.uuid4().hex[:24]}"


def order_transition(order: Order, new_status: str, *, now: datetime | None = None) -> None:
    """Move `order` to `new_status` (in memory; the caller saves). Illegal moves raise."""
    check_transition(order.status, new_status)
    order.status = new_status
    if new_status not in OPEN_STATUSES and order.closed_at is None:
        order.closed_at = now or timezone.now()
    metrics.ORDERS.labels(new_status, order.agent.name, order.symbol, order.mode).inc()


def _reject_kind(reason: str) -> str:
    return reason.split(" ", 1)[0].split(":", 1)[0][:32] or "unknown"


def order_create(*, agent: Agent, symbol: str, side: str, quantity: Decimal, order_type: str = OrderType.MARKET,
                 price: Decimal | None = None, reduce_only: bool = False, origin: str = OrderOrigin.STRATEGY,
                 decision_reason: str = "", reference_price: Decimal | None = None,
                 gateway: Gateway | None = None) -> Order:
    """Validate, check, and commit one order; enqueue its execution after the commit."""
    if side not in OrderSide.values:
        raise ValidationError(f"side must be one of {', '.join(OrderSide.values)}", field="side")
    if order_type not in OrderType.values:
        raise ValidationError(f"order_type must be one of {', '.join(OrderType.values)}", field="order_type")
    if not isinstance(quantity, Decimal) or not quantity.is_finite() or quantity <= 0:
        raise ValidationError("quantity must be a positive number", field="quantity")
    if order_type == OrderType.LIMIT and (price is None or not price.is_finite() or price <= 0):
        raise ValidationError("a limit order needs a positive price", field="price")
    gateway = gateway or gateway_for(agent.exchange)
    market = gateway.market(symbol)
    rounded = market.round_amount(quantity)
    if rounded <= 0:
        raise ValidationError(f"quantity rounds to zero at the market's step {market.amount_step}", field="quantity")
    order = Order(
        client_order_id=new_client_order_id(agent.pk), agent=agent, exchange=agent.exchange, mode=agent.mode,
        symbol=symbol, side=side, order_type=order_type, quantity=rounded,
        price=market.round_price(price) if price is not None else None, reduce_only=reduce_only, origin=origin,
        decision_reason=decision_reason, reference_price=reference_price,
    )
    try:
        refusal = pretrade_refusal(order)
    except SafetyStateUnknown as exc:
        refusal = f"safety state unknown: {exc}"
    if refusal:
        order.status = OrderStatus.REJECTED
        order.reject_reason = refusal
        order.closed_at = timezone.now()
        metrics.ORDER_REJECTS.labels(_reject_kind(refusal)).inc()
    with transaction.atomic():
        order.save()
        metrics.ORDERS.labels(order.status, agent.name, symbol, order.mode).inc()
        if order.status == OrderStatus.PENDING:
            transaction.on_commit(lambda: _enqueue_execution(order.pk))
    logger.info("order %s %s %s %s: %s", order.client_order_id, side, order.quantity, symbol, order.status,
                extra={"order_id": order.pk, "agent_id": agent.pk})
    return order


def _enqueue_execution(order_id: int) -> None:
    from trading.tasks import execute_order

    execute_order.delay(order_id)


def order_reject(*, order_id: int, reason: str) -> Order:
    with transaction.atomic():
        order = lock_order(order_id)
        if order.status in OPEN_STATUSES:
            order_transition(order, OrderStatus.REJECTED)
            order.reject_reason = reason
            order.save()
            metrics.ORDER_REJECTS.labels(_reject_kind(reason)).inc()
    logger.warning("order %s rejected: %s", order.client_order_id, reason, extra={"order_id": order_id})
    return order


def order_execute(*, order_id: int, gateway: Gateway | None = None) -> Order:
    """Send a pending order to its venue; safe to run twice for the same order."""
    order = Order.objects.select_related("agent").get(pk=order_id)
    if order.status not in (OrderStatus.PENDING, OrderStatus.SUBMITTED):
        return order  # already handled by an earlier delivery
    gateway = gateway or gateway_for(order.exchange)
    if order.status == OrderStatus.SUBMITTED:
        # A previous delivery may have reached the venue before dying: ask before sending again.
        report = gateway.fetch_order(order.client_order_id, order.symbol)
        if report is not None:
            return order_apply_report(order_id=order_id, report=report, gateway=gateway)
    request = OrderRequest(
        client_order_id=order.client_order_id, symbol=order.symbol, side=order.side, order_type=order.order_type,
        quantity=order.quantity, price=order.price, reduce_only=order.reduce_only,
    )
    try:
        with venue_send_permit(order):
            with transaction.atomic():
                order = lock_order(order_id)
                if order.status not in (OrderStatus.PENDING, OrderStatus.SUBMITTED):
                    return order
                if order.status == OrderStatus.PENDING:
                    order_transition(order, OrderStatus.SUBMITTED)
                    order.submitted_at = timezone.now()
                    order.save()
            report = gateway.submit_order(request)
    except TradingHalted as exc:
        return order_reject(order_id=order_id, reason=str(exc))
    except PermanentExchangeError as exc:
        return order_reject(order_id=order_id, reason=f"venue refused: {exc}")
    return order_apply_report(order_id=order_id, report=report, gateway=gateway)


def order_apply_report(*, order_id: int, report: VenueOrderReport, gateway: Gateway) -> Order:
    """Record what the venue says about an order: new fills, status, fees, realized PnL."""
    with transaction.atomic():
        order = lock_order(order_id)
        known = set(Fill.objects.filter(order=order).values_list("trade_id", flat=True))
        new_fills = [f for f in report.fills if f.trade_id not in known]
        position = lock_position(agent_id=order.agent_id, symbol=order.symbol) if new_fills else None
        notional = (order.average_fill_price or ZERO) * order.filled_quantity
        for venue_fill in new_fills:
            change = position_apply_fill(
                quantity=position.quantity, average_price=position.average_price, side=order.side,
                fill_quantity=venue_fill.quantity, fill_price=venue_fill.price, fee=venue_fill.fee,
            )
            Fill.objects.create(
                order=order, exchange=order.exchange, trade_id=venue_fill.trade_id, symbol=order.symbol,
                side=order.side, quantity=venue_fill.quantity, price=venue_fill.price, fee=venue_fill.fee,
                fee_currency=venue_fill.fee_currency, liquidity=venue_fill.liquidity,
                realized_pnl=change.realized_pnl, executed_at=venue_fill.executed_at,
            )
            position.quantity, position.average_price = change.quantity, change.average_price
            position.realized_pnl += change.realized_pnl
            position.fees_paid += venue_fill.fee
            if order.filled_quantity == 0:
                metrics.TICK_TO_FILL.observe(max(0.0, (venue_fill.executed_at - order.created_at).total_seconds()))
            order.filled_quantity += venue_fill.quantity
            order.fee += venue_fill.fee
            order.pnl += change.realized_pnl
            notional += venue_fill.quantity * venue_fill.price
            gateway.record_realized_pnl(venue_fill.trade_id, change.realized_pnl)
            metrics.FILLS.labels(order.agent.name, order.symbol, order.mode).inc()
        if position is not None:
            position.save()
        if order.filled_quantity > 0:
            order.average_fill_price = notional / order.filled_quantity
        order.venue_order_id = report.venue_order_id or order.venue_order_id
        target = _status_from_report(order, report)
        if target != order.status:
            order_transition(order, target)
            if target == OrderStatus.REJECTED:
                order.reject_reason = report.reject_reason or "rejected by the venue"
                metrics.ORDER_REJECTS.labels("venue").inc()
        order.save()
    return order


def _status_from_report(order: Order, report: VenueOrderReport) -> str:
    if order.filled_quantity >= order.quantity:
        return OrderStatus.EXECUTED
    if report.status == "rejected" and order.filled_quantity == 0:
        return OrderStatus.REJECTED
    if report.status == "cancelled":
        return OrderStatus.CANCELLED
    if order.filled_quantity > 0:
        return OrderStatus.PARTIALLY_FILLED
    if order.status == OrderStatus.PENDING:
        return OrderStatus.SUBMITTED
    return order.status


def order_cancel(*, order_id: int, reason: str, gateway: Gateway | None = None) -> Order:
    """Cancel an open order. Cancels never pass the trading gate: they always go."""
    order = Order.objects.select_related("agent").get(pk=order_id)
    if order.status not in OPEN_STATUSES:
        return order
    if order.status == OrderStatus.PENDING:
        with transaction.atomic():
            order = lock_order(order_id)
            if order.status == OrderStatus.PENDING:
                order_transition(order, OrderStatus.CANCELLED)
                order.reject_reason = reason
                order.save()
                return order
    gateway = gateway or gateway_for(order.exchange)
    report = gateway.cancel_order(order.client_order_id, order.symbol)
    if report is None:
        with transaction.atomic():
            order = lock_order(order_id)
            if order.status in OPEN_STATUSES:
                order_transition(order, OrderStatus.CANCELLED)
                order.reject_reason = reason
                order.save()
        return order
    return order_apply_report(order_id=order_id, report=report, gateway=gateway)


def open_order_ids() -> list[int]:
    return list(Order.objects.filter(status__in=OPEN_STATUSES).values_list("pk", flat=True))
