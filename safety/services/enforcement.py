"""What an active kill switch does to the book: cancel open orders, flatten if asked."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from safety.models import KillSwitchMode
from safety.services.kill_switch import kill_switch_read_db

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnforcementResult:
    cancelled: int
    flatten_orders: int


def kill_switch_enforce_now() -> EnforcementResult:
    # Trading imports safety (the gate), so safety reaches trading lazily.
    from trading.models import OrderOrigin, Position
    from trading.services.orders import open_order_ids, order_cancel, order_create

    view = kill_switch_read_db()
    if not view.active:
        return EnforcementResult(0, 0)
    cancelled = 0
    for order_id in open_order_ids():
        order = order_cancel(order_id=order_id, reason=f"kill switch {view.mode}: {view.reason}")
        cancelled += order.status == "cancelled"
    flatten = 0
    if view.mode == KillSwitchMode.CLOSE_POSITIONS:
        for position in Position.objects.exclude(quantity=0).select_related("agent"):
            order_create(
                agent=position.agent, symbol=position.symbol, side="sell" if position.quantity > 0 else "buy",
                quantity=abs(position.quantity), reduce_only=True, origin=OrderOrigin.KILL_SWITCH,
                decision_reason=f"kill switch CLOSE_POSITIONS: {view.reason}",
            )
            flatten += 1
    logger.warning("kill switch enforced: %s orders cancelled, %s flattening orders", cancelled, flatten)
    return EnforcementResult(cancelled, flatten)
