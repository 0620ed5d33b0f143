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
    from trading.services.orders import order_create, orders_cancel_open

    view = kill_switch_read_db()
    if not view.active:
        return EnforcementResult(0, 0)
    cancelled = orders_cancel_open(reason=f"kill switch {view.mode}: {view.reason}")
    flatten_ids: list[int] = []
    if view.mode == KillSwitchMode.CLOSE_POSITIONS:
        for position in Position.objects.exclude(quantity=0).select_related("agent").order_by("pk"):
            order = order_create(
                agent=position.agent, symbol=position.symbol, side="sell" if position.quantity > 0 else "buy",
                quantity=abs(position.quantity), reduce_only=True, origin=OrderOrigin.KILL_SWITCH,
                decision_reason=f"kill switch CLOSE_POSITIONS: {view.reason}", enqueue=False,
            )
            if order.status == "pending":
                flatten_ids.append(order.pk)
        _dispatch_batches(flatten_ids)
    logger.warning("kill switch enforced: %s orders cancelled, %s flattening orders", cancelled, len(flatten_ids))
    return EnforcementResult(cancelled, len(flatten_ids))


def _dispatch_batches(order_ids: list[int]) -> None:
    """Split the flattening orders over the execution workers: one task per slice, each slice
    sent under one hold of the trading gate (`orders_execute_batch`)."""
    from django.conf import settings

    from trading.tasks import execute_orders

    slices = max(1, min(len(order_ids), settings.KILL_SWITCH_FLATTEN_PARALLELISM))
    for index in range(slices):
        chunk = order_ids[index::slices]
        if chunk:
            execute_orders.delay(chunk)
