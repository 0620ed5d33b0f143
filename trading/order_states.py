"""The order state machine: one table of allowed moves, one function that applies them.

    pending ──► submitted ──► partially_filled ──► executed
       │            │   │            │
       │            │   └──────────► executed (filled at once)
       ├──► rejected (pre-trade check or venue refusal)
       ├──► cancelled / expired / failed
    submitted/partially_filled ──► cancelled / expired / rejected / failed

`executed` means fully filled. Terminal states never move, with one deliberate exception:
a venue can report a fill that happened just before our cancel reached it, so a
`cancelled` order may still take a fill and become `executed` (nautilus_trader does the same).
"""

from __future__ import annotations

from django.db import models

from tinywindow.exceptions import InvalidOrderTransition


class OrderStatus(models.TextChoices):
    PENDING = "pending"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    EXECUTED = "executed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"


S = OrderStatus

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.SUBMITTED, S.REJECTED, S.CANCELLED, S.EXPIRED, S.FAILED}),
    S.SUBMITTED: frozenset({S.PARTIALLY_FILLED, S.EXECUTED, S.CANCELLED, S.REJECTED, S.EXPIRED, S.FAILED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.EXECUTED, S.CANCELLED, S.EXPIRED, S.FAILED}),
    # A fill racing a cancel: the venue is the truth about what traded.
    S.CANCELLED: frozenset({S.PARTIALLY_FILLED, S.EXECUTED}),
    S.EXECUTED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
    S.FAILED: frozenset(),
}

OPEN_STATUSES: frozenset[str] = frozenset({S.PENDING, S.SUBMITTED, S.PARTIALLY_FILLED})
TERMINAL_STATUSES: frozenset[str] = frozenset({S.EXECUTED, S.CANCELLED, S.REJECTED, S.EXPIRED, S.FAILED})


def check_transition(current: str, new: str) -> None:
    """Raise `InvalidOrderTransition` unless `current → new` is in the table."""
    if new not in ALLOWED_TRANSITIONS.get(current, frozenset()):
        raise InvalidOrderTransition(f"order cannot move from {current!r} to {new!r}")
