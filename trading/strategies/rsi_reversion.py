"""RSI mean reversion: buy weakness, sell the bounce.

Long while Wilder's RSI of closes is below `oversold` (the market has fallen "too far, too
fast"), flat once it rises above `exit_level`; in between, keep whatever is held. The band
between the two levels is the hysteresis that stops the agent from flipping on every tick
when the RSI hovers around one threshold.

Wilder's RSI(n): changes d_i = close_i - close_{i-1}; the first average gain/loss is the plain
mean of the first n gains/losses, then each next one is smoothed as
    avg = (avg_prev * (n - 1) + current) / n
and RSI = 100 - 100 / (1 + avg_gain / avg_loss). The smoothing is recursive, so the value
depends (a little) on how much history it starts from. The strategy therefore always uses
exactly the last `warmup` candles: a live tick and a backtest at the same bar see the same
window and compute the same RSI, whatever number of candles the caller passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar

from tinywindow.exceptions import ValidationError
from trading.feeds.base import Candle
from trading.strategies.base import Decision, Param, ParamValue, Strategy

__all__ = ["RsiReversion", "wilder_rsi"]

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
# History used per decision, in multiples of the period. The seed (a plain mean) still weighs
# (1 - 1/n) ** (4 n) ~ e**-4 ~ 2 % after 4 n smoothing steps: enough for the decision, while
# keeping the candles fetched per tick small.
_HISTORY_PERIODS = 5


def wilder_rsi(closes: Sequence[Decimal], period: int) -> Decimal:
    """Wilder's RSI (0..100) of the LAST close, computed over all of `closes`.

    Needs at least `period + 1` closes (period changes). With no losses at all the RSI is 100,
    with no gains 0; a perfectly flat series (neither) is reported as 50, the neutral value,
    rather than dividing by zero.
    """
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    if len(closes) < period + 1:
        raise ValueError(f"RSI({period}) needs {period + 1} closes, got {len(closes)}")
    changes = [b - a for a, b in zip(closes, closes[1:], strict=False)]
    avg_gain = sum((c for c in changes[:period] if c > 0), _ZERO) / period
    avg_loss = sum((-c for c in changes[:period] if c < 0), _ZERO) / period
    for change in changes[period:]:
        gain = change if change > 0 else _ZERO
        loss = -change if change < 0 else _ZERO
        avg_gain = (avg_gain * (period - 1) + gain) / period
        avg_loss = (avg_loss * (period - 1) + loss) / period
    if avg_loss == 0:
        return _HUNDRED if avg_gain > 0 else Decimal(50)
    return _HUNDRED - _HUNDRED / (1 + avg_gain / avg_loss)


class RsiReversion(Strategy):
    """Hold `exposure` of capital after RSI(period) < oversold, until RSI(period) > exit_level."""

    name: ClassVar[str] = "rsi_reversion"
    param_specs: ClassVar[Mapping[str, Param]] = MappingProxyType(
        {
            # The upper bound keeps warmup (5 x period candles per tick) bounded.
            "period": Param(14, int, minimum=2, maximum=200, help="candles in Wilder's RSI"),
            "oversold": Param(
                Decimal("30"), Decimal, minimum=_ZERO, maximum=_HUNDRED, exclusive_minimum=True,
                help="go long when RSI is below this level",
            ),
            "exit_level": Param(
                Decimal("50"), Decimal, minimum=_ZERO, maximum=_HUNDRED,
                help="go flat when RSI is above this level; > oversold",
            ),
            "exposure": Param(
                Decimal("0.5"), Decimal, minimum=_ZERO, maximum=Decimal(1), exclusive_minimum=True,
                help="fraction of capital held while long",
            ),
        }
    )

    def check_params(self, values: Mapping[str, ParamValue]) -> None:
        # exit_level <= oversold would make "buy" and "sell" fire on the same reading.
        if not values["exit_level"] > values["oversold"]:
            raise ValidationError(
                f"exit_level ({values['exit_level']}) must be greater than oversold ({values['oversold']})",
                field="exit_level",
            )

    @property
    def period(self) -> int:
        return int(self.values["period"])

    @property
    def oversold(self) -> Decimal:
        return Decimal(self.values["oversold"])

    @property
    def exit_level(self) -> Decimal:
        return Decimal(self.values["exit_level"])

    @property
    def exposure(self) -> Decimal:
        return Decimal(self.values["exposure"])

    @property
    def warmup(self) -> int:
        return self.period * _HISTORY_PERIODS + 1

    def decide(self, candles: Sequence[Candle], position_qty: Decimal) -> Decision:
        """`exposure` below oversold, 0 above exit_level, None (keep the position) in between."""
        if len(candles) < self.warmup:
            return Decision(None, f"warming up: {len(candles)} of {self.warmup} candles")
        closes = [c.close for c in candles[-self.warmup :]]
        rsi = wilder_rsi(closes, self.period).quantize(Decimal("0.01"))
        head = f"RSI({self.period})={rsi}, last close {closes[-1]}"
        if rsi < self.oversold:
            return Decision(self.exposure, f"{head} < oversold {self.oversold}: hold {_percent(self.exposure)} long")
        if rsi > self.exit_level:
            return Decision(_ZERO, f"{head} > exit {self.exit_level}: hold 0% (flat)")
        held = "long" if position_qty > 0 else "flat"
        return Decision(
            None, f"{head} between oversold {self.oversold} and exit {self.exit_level}: keep position ({held})"
        )


def _percent(fraction: Decimal) -> str:
    return f"{(fraction * 100).normalize():f}%"
