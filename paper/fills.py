"""The paper venue's fill model as pure functions: slippage, volume cap, fill price, fees, funds.

No Django and no I/O: `paper.venue.PaperVenue` (orders in PostgreSQL, driven by Celery) and the
backtester (`trading.backtest`, a plain loop over candles) both call these, so a backtest fills
an order exactly as the paper venue would, to the last Decimal digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_UP, Decimal

from trading.gateways.base import Market

__all__ = [
    "BPS",
    "FEE_QUANTUM",
    "IMPACT_BPS_PER_VOLUME_SHARE",
    "MAX_SLIPPAGE_BPS",
    "FillModel",
    "FillQuote",
    "buy_affordable",
    "fill_fee",
]

ZERO = Decimal(0)
FEE_QUANTUM = Decimal("0.00000001")
BPS = Decimal("0.0001")
# Extra slippage per unit of (order quantity / candle volume), in bps, capped: a bigger order
# against a thin candle walks further into the book.
IMPACT_BPS_PER_VOLUME_SHARE = Decimal("50")
MAX_SLIPPAGE_BPS = Decimal("100")
_SLIPPAGE_QUANTUM = Decimal("0.0001")


@dataclass(frozen=True)
class FillQuote:
    """What one matching pass trades: quantity at price, the fee rate and how it was reached."""

    quantity: Decimal
    price: Decimal
    fee_rate: Decimal
    liquidity: str  # "maker" or "taker"
    slippage_bps: Decimal


@dataclass(frozen=True)
class FillModel:
    """Fees, slippage and the per-pass volume cap of the paper venue (PAPER_* settings)."""

    taker_fee_rate: Decimal
    maker_fee_rate: Decimal
    base_slippage_bps: Decimal
    max_volume_share: Decimal
    # Not a setting: the venue always uses the module constant. A backtest compared with a
    # frictionless engine (backtesting.py) sets it to 0 along with the fees.
    impact_bps_per_volume_share: Decimal = IMPACT_BPS_PER_VOLUME_SHARE

    @classmethod
    def from_settings(cls, **overrides: Decimal | str | None) -> FillModel:
        """The configured model (PAPER_TAKER_FEE_RATE, ...); a non-None override wins."""
        from django.conf import settings

        configured = {
            "taker_fee_rate": settings.PAPER_TAKER_FEE_RATE,
            "maker_fee_rate": settings.PAPER_MAKER_FEE_RATE,
            "base_slippage_bps": settings.PAPER_BASE_SLIPPAGE_BPS,
            "max_volume_share": settings.PAPER_MAX_VOLUME_SHARE,
        }
        return cls(**{
            name: Decimal(str(overrides[name] if overrides.get(name) is not None else value))
            for name, value in configured.items()
        })

    def slippage_bps(self, quantity: Decimal, volume: Decimal) -> Decimal:
        """Base slippage plus market impact (the order's share of the candle's volume), capped."""
        impact = MAX_SLIPPAGE_BPS if volume <= 0 else self.impact_bps_per_volume_share * quantity / volume
        return min(self.base_slippage_bps + impact, MAX_SLIPPAGE_BPS).quantize(_SLIPPAGE_QUANTUM)

    def volume_cap(self, volume: Decimal, market: Market) -> Decimal:
        """The most one pass trades against a candle of `volume` (0: nothing traded, nothing to match)."""
        return market.round_amount(self.max_volume_share * volume) if volume > 0 else ZERO

    def buy_hold(self, *, quantity: Decimal, reference: Decimal, volume: Decimal, market: Market,
                 limit_price: Decimal | None = None) -> Decimal:
        """Quote a buy locks at submission: its (limit or expected market) price plus the taker fee."""
        if limit_price is not None:
            price = limit_price
        else:
            slippage = self.slippage_bps(quantity, volume)
            # One tick of headroom: the fill price is rounded to the tick and may round up.
            price = reference * (1 + slippage * BPS) + market.price_step
        return (quantity * price * (1 + self.taker_fee_rate)).quantize(FEE_QUANTUM, rounding=ROUND_UP)

    def quote(self, *, side: str, remaining: Decimal, reference: Decimal, volume: Decimal, market: Market,
              limit_price: Decimal | None = None, rested: bool = False) -> FillQuote | None:
        """What one matching pass trades of an open order, or None when it rests this pass.

        A limit order that does not cross rests; nothing traded in the candle means nothing to
        match against. A limit order that has sat on the book is hit by someone else: maker, at
        its own price. Otherwise taker, at `reference` moved against the order by slippage,
        never worse than the limit.
        """
        buy = side == "buy"
        is_limit = limit_price is not None
        if is_limit and not ((buy and limit_price >= reference) or (not buy and limit_price <= reference)):
            return None
        quantity = min(remaining, self.volume_cap(volume, market))
        if quantity <= 0:
            return None
        if is_limit and rested:
            return FillQuote(quantity, limit_price, self.maker_fee_rate, "maker", ZERO)
        slippage_bps = self.slippage_bps(quantity, volume)
        direction = 1 if buy else -1
        price = market.round_price(reference * (1 + direction * slippage_bps * BPS))
        if is_limit:
            price = min(price, limit_price) if buy else max(price, limit_price)
        return FillQuote(quantity, price, self.taker_fee_rate, "taker", slippage_bps)


def fill_fee(quantity: Decimal, price: Decimal, fee_rate: Decimal) -> Decimal:
    """The fee of one fill, in the quote currency."""
    return (quantity * price * fee_rate).quantize(FEE_QUANTUM)


def buy_affordable(*, quantity: Decimal, price: Decimal, fee_rate: Decimal, available: Decimal,
                   market: Market) -> Decimal:
    """How much of a buy fill `available` quote pays for, fee included (all of it, or less).

    The price may run away from what the order held (a market order filling over several
    passes): the venue then trades what the account can still pay for.
    """
    unit_cost = price * (1 + fee_rate)
    if quantity * unit_cost > available:
        return market.round_amount(available / unit_cost)
    return quantity
