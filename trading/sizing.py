"""From a strategy's target exposure to an order: side, quantity at the market's precision.

Pure (no Django): the live tick (`trading.services.agents.agent_tick`) and the backtester call
this one function, so both turn the same decision into the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from trading.gateways.base import Market

__all__ = ["OrderIntent", "order_for_target"]


@dataclass(frozen=True)
class OrderIntent:
    side: str  # buy | sell
    quantity: Decimal
    reduce_only: bool


def order_for_target(*, capital: Decimal, target_exposure: Decimal, price: Decimal, held: Decimal,
                     market: Market) -> OrderIntent | None:
    """The order that moves `held` to `target_exposure` of `capital` at `price`, or None.

    None when the difference rounds to nothing at the market's amount step or is worth less
    than the market's minimum notional (the venue would refuse it). A sell towards a target
    that is still >= 0 is reduce-only: it may shrink the position, never open a short.
    """
    if not target_exposure and not held:
        return None  # flat and staying flat: the common case of a backtest bar, answered without arithmetic
    target_quantity = capital * target_exposure / price
    delta = market.round_amount(abs(target_quantity - held))
    if delta <= 0 or delta * price < market.min_notional:
        return None
    side = "buy" if target_quantity > held else "sell"
    return OrderIntent(side, delta, side == "sell" and target_quantity >= 0)
