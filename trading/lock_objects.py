"""Row locks for read-modify-write, taken in one fixed order: order, then position.

Every service that changes an order and its position goes through these helpers, so two
workers can never lock the same pair in opposite orders (no deadlocks).
"""

from __future__ import annotations

from trading.models import Order, Position


def lock_order(order_id: int) -> Order:
    return Order.objects.select_for_update().select_related("agent").get(pk=order_id)


def lock_position(*, agent_id: int, symbol: str) -> Position:
    """Lock the agent's position in `symbol`, creating it (flat) first if it has none."""
    position = Position.objects.select_for_update().filter(agent_id=agent_id, symbol=symbol).first()
    if position is not None:  # the usual case: one query
        return position
    Position.objects.get_or_create(agent_id=agent_id, symbol=symbol)
    return Position.objects.select_for_update().get(agent_id=agent_id, symbol=symbol)
