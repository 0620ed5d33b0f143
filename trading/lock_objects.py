"""Row locks for read-modify-write, taken in one fixed order: orders, then positions.

Every service that changes an order and its position goes through these helpers, so two
workers can never lock the same pair in opposite orders (no deadlocks). Several positions are
locked with one query, sorted by (agent, symbol): two batches that share positions take them
in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from tinywindow.rows import CompiledQuery, rows_lock
from trading.models import Order, Position
from trading.order_states import OrderStatus

PositionKey = tuple[int, str]  # (agent id, symbol)


def lock_order(order_id: int) -> Order:
    """Lock the order (with its agent, read not locked). Raises Order.DoesNotExist."""
    found = _LOCK_ORDER.instances(order_id=order_id)
    if not found:
        raise Order.DoesNotExist(f"order {order_id} does not exist")
    return found[0]


# Every order's execution starts here: compiled once (tinywindow.rows). FOR UPDATE OF the order
# only: without `of`, PostgreSQL locks the joined agent row too, and two executions of one agent's
# orders (or a fill's foreign-key check on its agent) then wait for each other.
_LOCK_ORDER = CompiledQuery(lambda order_id: Order.objects.select_for_update(of=("self",)).select_related("agent")
                            .filter(pk=order_id), order_id=int)


def lock_orders_to_send(order_ids: Iterable[int]) -> QuerySet[Order]:
    """These orders, those still pending or submitted, locked in id order (with their agents,
    read not locked), for a batch's execution. Evaluate it inside the transaction."""
    return (Order.objects.select_for_update(of=("self",)).select_related("agent")
            .filter(pk__in=list(order_ids), status__in=[OrderStatus.PENDING, OrderStatus.SUBMITTED]).order_by("pk"))


def lock_position(*, agent_id: int, symbol: str) -> Position:
    """Lock the agent's position in `symbol`, creating it (flat) first if it has none."""
    return lock_positions([(agent_id, symbol)])[(agent_id, symbol)]


def lock_positions(keys: Iterable[PositionKey]) -> dict[PositionKey, Position]:
    """Lock these positions (one query), creating the missing ones (flat) first."""
    wanted = set(keys)
    found = {(p.agent_id, p.symbol): p for p in rows_lock(Position, ("agent_id", "symbol"), wanted)}
    if len(found) < len(wanted):  # an agent's first trade in a symbol
        Position.objects.bulk_create([Position(agent_id=a, symbol=s) for a, s in sorted(wanted - found.keys())],
                                     ignore_conflicts=True)  # another worker may be creating it too
        found = {(p.agent_id, p.symbol): p for p in rows_lock(Position, ("agent_id", "symbol"), wanted)}
    return found
