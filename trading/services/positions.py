"""Position accounting by average cost, fees included.

Buy fees are part of the cost basis; sell fees reduce the proceeds. So a round trip's
realized PnL is exactly (sell proceeds - sell fee) - (buy cost + buy fee), and
realized + unrealized - (fees already in realized) always equals the change in equity.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tinywindow.fields import ZERO


@dataclass(frozen=True)
class PositionChange:
    quantity: Decimal
    average_price: Decimal
    realized_pnl: Decimal


def position_apply_fill(*, quantity: Decimal, average_price: Decimal, side: str, fill_quantity: Decimal,
                        fill_price: Decimal, fee: Decimal) -> PositionChange:
    """New quantity and average cost after one fill, and the PnL it realized.

    Works for longs and shorts and for a fill that flips the position; the fee is split in
    proportion between the closing part (realized) and the opening part (cost basis).
    """
    if fill_quantity <= 0:
        raise ValueError("fill quantity must be positive")
    signed_fill = fill_quantity if side == "buy" else -fill_quantity
    direction = 1 if signed_fill > 0 else -1
    if quantity == 0 or (quantity > 0) == (signed_fill > 0):
        new_quantity = quantity + signed_fill
        # Cost basis moves against us by the fee: higher for a long, lower for a short.
        total_cost = abs(quantity) * average_price + fill_quantity * fill_price + direction * fee
        return PositionChange(new_quantity, total_cost / abs(new_quantity), ZERO)

    closing = min(abs(quantity), fill_quantity)
    opening = fill_quantity - closing
    closing_fee = fee * closing / fill_quantity
    held_direction = 1 if quantity > 0 else -1
    realized = (fill_price - average_price) * closing * held_direction - closing_fee
    new_quantity = quantity + signed_fill
    if opening > 0:
        opening_fee = fee - closing_fee
        new_average = (opening * fill_price + direction * opening_fee) / opening
    elif new_quantity == 0:
        new_average = ZERO
    else:
        new_average = average_price
    return PositionChange(new_quantity, new_average, realized)


def unrealized_pnl(*, quantity: Decimal, average_price: Decimal, mark_price: Decimal) -> Decimal:
    return (mark_price - average_price) * quantity
