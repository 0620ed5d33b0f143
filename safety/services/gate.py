"""The trading gate: the one place that decides whether an order may go to a venue.

Two checks, same rules (kill switch, then circuit breakers):
- `pretrade_refusal()` when an order is created (fast: the Redis mirrors, DB fallback);
  the pre-trade risk limits (`safety.services.risk`) run right after it;
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
from safety.services.breakers import breaker_refusal, breaker_refusal_fast, breakers_not_closed
from safety.services.kill_switch import TRADING_GATE_LOCK_KEY, KillSwitchView, kill_switch_read_db, kill_switch_state
from tinywindow.exceptions import TradingHalted

logger = logging.getLogger(__name__)


class OrderLike(Protocol):
    reduce_only: bool
    origin: str
    exchange: str
    symbol: str
    agent_id: int


def kill_switch_refusal(order: OrderLike, view: KillSwitchView) -> str | None:
    """Why the kill switch refuses this order, or None when it may go."""
    if not view.active:
        return None
    if view.mode == KillSwitchMode.CLOSE_POSITIONS and order.reduce_only and order.origin == "kill_switch":
        return None  # the flattening orders are the only ones allowed while CLOSE_POSITIONS is active
    return f"kill switch active ({view.mode}): {view.reason}"


def pretrade_refusal(order: OrderLike) -> str | None:
    """Checked when an order is created. Raises SafetyStateUnknown when state cannot be read.

    An order let through a HALF_OPEN breaker uses one of its probe slots here.
    """
    return kill_switch_refusal(order, kill_switch_state()) or breaker_refusal_fast(order)


class TradingGate:
    """The safety state read once under the trading-gate lock, for one or many sends."""

    def __init__(self) -> None:
        self.kill_switch = kill_switch_read_db()
        self.not_closed = breakers_not_closed()

    def refusal(self, order: OrderLike) -> str | None:
        return kill_switch_refusal(order, self.kill_switch) or breaker_refusal(order, not_closed=self.not_closed)


@contextmanager
def trading_gate() -> Iterator[TradingGate]:
    """Hold the trading gate shared while the caller talks to the venue.

    Check every order with `gate.refusal(order)` before sending it. The lock is session-level
    so it spans the caller's own transactions; it is released in `finally`, and by PostgreSQL
    itself if the process dies. Holding it for a batch of sends (the kill switch's flattening
    orders) reads the state once instead of once per order; a kill-switch activation waits
    for the batch, and every send after it sees the new state.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock_shared(%s)", [TRADING_GATE_LOCK_KEY])
    try:
        yield TradingGate()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_shared(%s)", [TRADING_GATE_LOCK_KEY])


@contextmanager
def venue_send_permit(order: OrderLike) -> Iterator[None]:
    """`trading_gate()` for one order: raises TradingHalted (before anything is sent) when the
    kill switch or an OPEN breaker forbids it (a HALF_OPEN breaker's probe slot was taken at
    creation)."""
    with trading_gate() as gate:
        refusal = gate.refusal(order)
        if refusal:
            raise TradingHalted(refusal)
        yield
