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
    from trading.models import Position
    from trading.services.orders import orders_cancel_open, orders_flatten_create

    view = kill_switch_read_db()
    if not view.active:
        return EnforcementResult(0, 0)
    cancelled = orders_cancel_open(reason=f"kill switch {view.mode}: {view.reason}")
    flattening: list = []
    if view.mode == KillSwitchMode.CLOSE_POSITIONS:
        positions = list(Position.objects.exclude(quantity=0).select_related("agent").order_by("pk"))
        orders = orders_flatten_create(positions=positions, reason=f"kill switch CLOSE_POSITIONS: {view.reason}",
                                       kill_switch=view)
        flattening = [order for order in orders if order.status == "pending"]
        _dispatch_batches(flattening)
    logger.warning("kill switch enforced: %s orders cancelled, %s flattening orders", cancelled, len(flattening))
    return EnforcementResult(cancelled, len(flattening))


def _dispatch_batches(orders: list) -> None:
    """Split the flattening orders over the execution workers: one task per slice, each slice
    sent under one hold of the trading gate (`orders_execute_batch`). An agent's orders stay in
    one slice: they share its venue account's balance rows, which a batch holds locked until it
    commits, so slices with disjoint agents run side by side instead of waiting on each other.

    The slices go on the `safety` queue (DESIGN.md: kill-switch actions, flattening included,
    are never starved), not behind whatever backlog of single orders `execution` holds."""
    from django.conf import settings

    from trading.tasks import execute_orders

    by_agent: dict[int, list[int]] = {}
    for order in orders:
        by_agent.setdefault(order.agent_id, []).append(order.pk)
    slices = max(1, min(len(by_agent), settings.KILL_SWITCH_FLATTEN_PARALLELISM))
    chunks: list[list[int]] = [[] for _ in range(slices)]
    for agent_ids in sorted(by_agent.values(), key=len, reverse=True):  # largest first: even slices
        min(chunks, key=len).extend(agent_ids)
    for chunk in chunks:
        if chunk:
            execute_orders.apply_async(args=[sorted(chunk)], queue="safety")
