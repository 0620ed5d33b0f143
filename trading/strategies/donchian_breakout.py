"""Donchian channel breakout: follow the market out of its recent range.

Long when the last close is above the highest high of the `entry` candles before it (a
breakout), flat when it is below the lowest low of the `exit` candles before it; inside the
channel, keep whatever is held. The last candle is never part of its own channel: otherwise a
close could never be above a high that includes itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar

from trading.feeds.base import Candle
from trading.strategies.base import Decision, Param, Strategy

__all__ = ["DonchianBreakout"]

_ZERO = Decimal(0)


class DonchianBreakout(Strategy):
    """Hold `exposure` of capital after a close above the entry-bar high, until one below the exit-bar low."""

    name: ClassVar[str] = "donchian_breakout"
    param_specs: ClassVar[Mapping[str, Param]] = MappingProxyType(
        {
            # Upper bounds keep the candles fetched per tick (= warmup) bounded.
            "entry": Param(20, int, minimum=1, maximum=1000, help="candles whose highest high a close must beat"),
            "exit": Param(10, int, minimum=1, maximum=1000, help="candles whose lowest low a close must break"),
            "exposure": Param(
                Decimal("0.5"), Decimal, minimum=_ZERO, maximum=Decimal(1), exclusive_minimum=True,
                help="fraction of capital held while long",
            ),
        }
    )

    @property
    def entry(self) -> int:
        return int(self.values["entry"])

    @property
    def exit(self) -> int:
        return int(self.values["exit"])

    @property
    def exposure(self) -> Decimal:
        return Decimal(self.values["exposure"])

    @property
    def warmup(self) -> int:
        return max(self.entry, self.exit) + 1

    def decide(self, candles: Sequence[Candle], position_qty: Decimal) -> Decision:
        """`exposure` on a breakout above the channel, 0 below it, None (keep the position) inside."""
        if len(candles) < self.warmup:
            return Decision(None, f"warming up: {len(candles)} of {self.warmup} candles")
        last = candles[-1].close
        before = candles[-self.warmup : -1]
        upper = max(c.high for c in before[-self.entry :])
        lower = min(c.low for c in before[-self.exit :])
        if last > upper:
            return Decision(
                self.exposure,
                f"close {last} > {self.entry}-bar high {upper}: breakout, hold {_percent(self.exposure)} long",
            )
        if last < lower:
            return Decision(_ZERO, f"close {last} < {self.exit}-bar low {lower}: breakdown, hold 0% (flat)")
        held = "long" if position_qty > 0 else "flat"
        return Decision(
            None,
            f"close {last} inside {self.entry}-bar high {upper} / {self.exit}-bar low {lower}: keep position ({held})",
        )


def _percent(fraction: Decimal) -> str:
    return f"{(fraction * 100).normalize():f}%"
