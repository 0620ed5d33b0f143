"""The trading gate: the one place that decides whether an order may go to a venue.

Two checks, same rules (kill switch, then circuit breakers):
- `pretrade_refusal()` when an order is created (fast: the Redis mirrors, DB fallback);
  the pre-trade risk limits (`safety.services.risk`) run right after it;
- `venue_send_permit()` right before the venue call (authoritative: the database, read while
  holding the trading-gate lock shared, so a kill-switch activation cannot slip in between
  the check and the send — see `safety.services.kill_switch`). A send to a venue that lives in
  this database (the paper venue) holds it for its transaction instead (`trading_gate_in_transaction`).
Cancels never pass through here: they always go.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from django.db import connection
from django.db.models import Exists

from safety.models import CircuitBreakerState, KillSwitchMode, KillSwitchState
from safety.services.breakers import (
    breaker_refusal,
    breaker_refusal_fast,
    breakers_not_closed,
    not_closed_condition,
)
from safety.services.kill_switch import TRADING_GATE_LOCK_KEY, KillSwitchView, kill_switch_state
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


def pretrade_refusal(order: OrderLike, *, kill_switch: KillSwitchView | None = None) -> str | None:
    """Checked when an order is created. Raises SafetyStateUnknown when state cannot be read.

    `kill_switch`: the state the caller has just read for a whole batch of orders (the kill
    switch's own flattening orders), instead of one read per order.
    An order let through a HALF_OPEN breaker uses one of its probe slots here.
    """
    view = kill_switch if kill_switch is not None else kill_switch_state()
    return kill_switch_refusal(order, view) or breaker_refusal_fast(order)


def _safety_state_read() -> tuple[KillSwitchView, list[CircuitBreakerState]]:
    """The kill switch and the OPEN / HALF_OPEN breakers, authoritative (the database), in one
    query when every breaker is closed (the usual case): the kill-switch row carries an EXISTS
    over the breaker states, and only when it is true are the breakers themselves loaded."""
    sql, params = _safety_state_query()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:  # never engaged: no row yet
        return KillSwitchView(active=False, mode="", reason=""), breakers_not_closed()
    active, mode, reason, actor, changed_at, any_not_closed = row
    view = KillSwitchView(active=active, mode=mode, reason=reason, actor=actor, changed_at=changed_at)
    return view, (breakers_not_closed() if any_not_closed else [])


@functools.cache
def _safety_state_query() -> tuple[str, tuple]:
    """`_safety_state_read`'s query, compiled by the ORM once: it never changes, and compiling it
    on every order (an annotated EXISTS) cost more than running it."""
    not_closed = CircuitBreakerState.objects.filter(not_closed_condition())
    query = (KillSwitchState.objects.filter(pk=KillSwitchState.SINGLETON_ID)
             .annotate(breakers_not_closed=Exists(not_closed))
             .values_list("active", "mode", "reason", "actor", "changed_at", "breakers_not_closed"))
    return query.query.sql_with_params()


class TradingGate:
    """The safety state read once under the trading-gate lock, for one or many sends."""

    def __init__(self) -> None:
        self.kill_switch, self.not_closed = _safety_state_read()

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
    global _session_gates_held
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock_shared(%s)", [TRADING_GATE_LOCK_KEY])
    _session_gates_held += 1
    try:
        yield TradingGate()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_shared(%s)", [TRADING_GATE_LOCK_KEY])
        _session_gates_held -= 1


# How many session-level holds of the gate this process has taken and not released. Workers
# keep their database connection from task to task, so a hold that leaked (its unlock never ran)
# would outlive its task and make every activation wait: the worker closes its connection after
# a task that leaves this above zero (tinywindow.celery_signals), which makes PostgreSQL drop it.
_session_gates_held = 0


def trading_gate_leaked() -> bool:
    return _session_gates_held > 0


def trading_gate_forget() -> None:
    """The connection that held the leaked gate is closed: nothing is held any more."""
    global _session_gates_held
    _session_gates_held = 0


def trading_gate_in_transaction() -> TradingGate:
    """The trading gate for a caller whose send happens inside its current transaction (a venue
    in this database, the paper venue): taken shared until that transaction ends — after the
    venue has answered — so an activation waits for it, and no unlock round trip is needed.
    Called inside `transaction.atomic()`; check each order with `gate.refusal(order)`."""
    if not connection.in_atomic_block:
        raise RuntimeError("trading_gate_in_transaction() needs an open transaction")
    with connection.cursor() as cursor:
        # A statement of its own: the state is read by the next statement, whose snapshot is
        # taken after the lock was granted (after an activation that held it has committed).
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [TRADING_GATE_LOCK_KEY])
    return TradingGate()


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
