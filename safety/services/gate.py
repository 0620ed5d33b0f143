"""The trading gate: the one place that decides whether an order may go to a venue.

Two checks, same rule:
- `pretrade_refusal()` when an order is created (fast: the Redis mirror, DB fallback);
- `venue_send_permit()` right before the venue call (authoritative: the database, read while
  holding the trading-gate lock shared, so a kill-switch activation cannot slip in between
  the check and the send — see `safety.services.kill_switch`).
Cancels never pass through here: they always go.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from django.db import connection

from safety.models import KillSwitchMode
from safety.services.kill_switch import TRADING_GATE_LOCK_KEY, KillSwitchView, kill_switch_read_db, kill_switch_state
from tinywindow.exceptions import TradingHalted

logger = logging.getLogger(__name__)


class OrderLike(Protocol):
    reduce_only: bool
    origin: str


def kill_switch_refusal(order: OrderLike, view: KillSwitchView) -> str | None:
    """Why the kill switch refuses this order, or None when it may go."""
    if not view.active:
        return None
    if view.mode == KillSwitchMode.CLOSE_POSITIONS and order.reduce_only and order.origin == "kill_switch":
        return None  # the flattening orders are the only ones allowed while CLOSE_POSITIONS is active
    return f"kill switch active ({view.mode}): {view.reason}"


def pretrade_refusal(order: OrderLike) -> str | None:
    """Checked when an order is created. Raises SafetyStateUnknown when state cannot be read."""
    return kill_switch_refusal(order, kill_switch_state())


@contextmanager
def venue_send_permit(order: OrderLike) -> Iterator[None]:
    """Hold the trading gate shared while the caller talks to the venue.

    Raises TradingHalted (before anything is sent) when the kill switch forbids the order.
    The lock is session-level so it spans the caller's own transactions; it is released in
    `finally`, and by PostgreSQL itself if the process dies.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock_shared(%s)", [TRADING_GATE_LOCK_KEY])
    try:
        refusal = kill_switch_refusal(order, kill_switch_read_db())
        if refusal:
            raise TradingHalted(refusal)
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_shared(%s)", [TRADING_GATE_LOCK_KEY])
