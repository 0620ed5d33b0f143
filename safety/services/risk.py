"""Pre-trade risk limits: one function every new order passes, allow or deny with a reason.

Limits come from the global `risk_limits` row (every agent's default) and the agent's own
row; both apply to the agent's orders, the stricter wins. Checks: the market's precision
and minimums, max order notional, max position notional per symbol, max gross exposure,
max open orders, max orders per minute, and a price band around the last price for limit orders (fat-finger guard).
Orders that only reduce a position (reduce-only, and the kill switch's flattening orders)
skip the exposure limits: refusing them would keep risk on. Cancels never come here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import Count, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from safety.models import RiskLimit
from tinywindow.fields import ZERO
from tinywindow.rows import CompiledQuery


@dataclass(frozen=True)
class RiskDecision:
    allowed: bool
    reason: str = ""

    @classmethod
    def deny(cls, reason: str) -> RiskDecision:
        return cls(False, f"risk limit: {reason}")


ALLOW = RiskDecision(True)


@dataclass(frozen=True)
class Limits:
    """The limits that apply to one order: the strictest of the global and the agent rows."""

    max_order_notional: Decimal | None = None
    max_position_notional: Decimal | None = None
    max_gross_exposure: Decimal | None = None
    max_open_orders: int | None = None
    max_orders_per_minute: int | None = None
    price_band: Decimal | None = None

    @classmethod
    def combine(cls, rows: list[RiskLimit]) -> Limits:
        def strictest(field: str):
            values = [getattr(r, field) for r in rows if getattr(r, field) is not None]
            return min(values) if values else None

        return cls(**{f: strictest(f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class OrderFacts:
    """What the checks need to know about the order and the book (gathered by the caller)."""

    side: str
    quantity: Decimal
    price: Decimal  # limit price, or the reference price of a market order
    last_price: Decimal
    is_limit: bool
    reduces_only: bool
    position_quantity: Decimal
    gross_exposure: Decimal
    open_orders: int
    orders_last_minute: int


def limits_check(facts: OrderFacts, limits: Limits) -> RiskDecision:
    """The rules themselves, pure (the property tests drive this function)."""
    notional = facts.quantity * facts.price
    if facts.is_limit and limits.price_band is not None and facts.last_price > 0:
        distance = abs(facts.price / facts.last_price - 1)
        if distance > limits.price_band:
            return RiskDecision.deny(f"limit price {facts.price} is {distance:.2%} from the last price "
                                     f"{facts.last_price} (band {limits.price_band:.2%})")
    if limits.max_open_orders is not None and facts.open_orders >= limits.max_open_orders:
        return RiskDecision.deny(f"{facts.open_orders} open orders (max {limits.max_open_orders})")
    if limits.max_orders_per_minute is not None and facts.orders_last_minute >= limits.max_orders_per_minute:
        return RiskDecision.deny(f"{facts.orders_last_minute} orders in the last minute "
                                 f"(max {limits.max_orders_per_minute})")
    if facts.reduces_only:
        return ALLOW
    if limits.max_order_notional is not None and notional > limits.max_order_notional:
        return RiskDecision.deny(f"order notional {notional:.2f} above {limits.max_order_notional}")
    signed = facts.quantity if facts.side == "buy" else -facts.quantity
    position_after = abs(facts.position_quantity + signed) * facts.price
    if limits.max_position_notional is not None and position_after > limits.max_position_notional:
        return RiskDecision.deny(f"position notional would be {position_after:.2f} "
                                 f"(max {limits.max_position_notional})")
    gross_after = facts.gross_exposure - abs(facts.position_quantity) * facts.price + position_after
    if limits.max_gross_exposure is not None and gross_after > limits.max_gross_exposure:
        return RiskDecision.deny(f"gross exposure would be {gross_after:.2f} (max {limits.max_gross_exposure})")
    return ALLOW


def risk_check_order(order, *, market, last_price: Decimal, now: datetime) -> RiskDecision:
    """Check an unsaved `trading.Order` against the market and the limits."""
    if order.quantity < market.min_amount:
        return RiskDecision.deny(f"quantity {order.quantity} below the market minimum {market.min_amount}")
    price = order.price if order.price is not None else last_price
    if order.origin == "kill_switch":
        return ALLOW
    if price > 0 and order.quantity * price < market.min_notional and not order.reduce_only:
        return RiskDecision.deny(f"notional {order.quantity * price:.2f} below the market minimum "
                                 f"{market.min_notional}")
    # The limit rows (global, the agent's) each carry the agent's book: one round trip for both.
    rows = _LIMITS_WITH_BOOK.instances(agent_id=order.agent_id, since=now - timedelta(seconds=60))
    limits = Limits.combine(rows)
    if limits == Limits():
        return ALLOW  # no limits configured
    book = rows[0]
    held = ZERO
    gross = ZERO
    for symbol, quantity, average_price in zip(book.held_symbols, book.held_quantities, book.held_average_prices,
                                               strict=True):
        mark = last_price if symbol == order.symbol else average_price
        gross += abs(quantity) * mark
        if symbol == order.symbol:
            held = quantity
    facts = OrderFacts(
        side=order.side, quantity=order.quantity, price=price, last_price=last_price,
        is_limit=order.order_type == "limit", reduces_only=order.reduce_only,
        position_quantity=held, gross_exposure=gross,
        open_orders=book.open_orders, orders_last_minute=book.recent_orders,
    )
    return limits_check(facts, limits)


def _limits_with_book(agent_id: int, since: datetime) -> QuerySet[RiskLimit]:
    """The limit rows that apply to the agent, each annotated with the agent's non-zero positions
    (`held_symbols`, `held_quantities`, `held_average_prices`: lists in the same order) and its
    order counts (`open_orders`, `recent_orders`: created since `since`). No limit rows, no book:
    without limits nothing needs it."""
    from trading.models import Order, Position
    from trading.order_states import OPEN_STATUSES

    positions = Position.objects.filter(agent_id=agent_id).exclude(quantity=0).order_by("symbol")
    orders = Order.objects.filter(agent_id=agent_id).order_by().values("agent_id")

    def count(**conditions: Any) -> Coalesce:
        return Coalesce(Subquery(orders.filter(**conditions).annotate(n=Count("pk")).values("n")), 0)

    return RiskLimit.objects.filter(Q(agent__isnull=True) | Q(agent_id=agent_id)).annotate(
        held_symbols=ArraySubquery(positions.values("symbol")),
        held_quantities=ArraySubquery(positions.values("quantity")),
        held_average_prices=ArraySubquery(positions.values("average_price")),
        open_orders=count(status__in=OPEN_STATUSES),
        recent_orders=count(created_at__gte=since),
    )


# Every order is checked: compiled once (tinywindow.rows), as building it through the ORM cost
# more than running it.
_LIMITS_WITH_BOOK = CompiledQuery(_limits_with_book, agent_id=int, since=datetime)


LIMIT_FIELDS = ("max_order_notional", "max_position_notional", "max_gross_exposure", "max_open_orders",
                "max_orders_per_minute", "price_band")


def risk_limit_set(*, values: dict, actor: str, source: str = "") -> RiskLimit:
    """Create or replace the limits row of `values["agent"]` (None: the global row); audited."""
    from django.db import transaction

    from safety.services.audit import audit_record

    agent = values.get("agent")
    changes = {field: values.get(field) for field in LIMIT_FIELDS}
    with transaction.atomic():
        limit = RiskLimit.objects.select_for_update().filter(agent=agent).first() or RiskLimit(agent=agent)
        before = {field: getattr(limit, field) for field in LIMIT_FIELDS} if limit.pk else {}
        for field, value in changes.items():
            setattr(limit, field, value)
        limit.save()
        audit_record(actor=actor, action="risk_limit.set", target=f"agent:{agent.pk}" if agent else "global",
                     details={"before": {k: str(v) for k, v in before.items()},
                              "after": {k: str(v) for k, v in changes.items()}}, source=source)
    return limit
