"""Simple moving-average crossover: long while the fast average of closes is above the slow one.

Deliberately plain: it is the reference strategy that exercises the whole pipeline (feed ->
decision -> risk -> order -> fill), so its behaviour must be obvious from the reason string alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar

from tinywindow.exceptions import ValidationError
from trading.feeds.base import Candle
from trading.strategies.base import Decision, Param, ParamValue, Strategy

__all__ = ["SmaCross"]

_ZERO = Decimal(0)


class SmaCross(Strategy):
    """Hold `exposure` of capital while SMA(fast) > SMA(slow) of closes, else hold nothing."""

    name: ClassVar[str] = "sma_cross"
    param_specs: ClassVar[Mapping[str, Param]] = MappingProxyType(
        {
            # Upper bounds keep the candles fetched per tick (= warmup) bounded.
            "fast": Param(5, int, minimum=1, maximum=1000, help="candles in the fast average"),
            "slow": Param(20, int, minimum=2, maximum=1000, help="candles in the slow average; > fast"),
            "exposure": Param(
                Decimal("0.5"),
                Decimal,
                minimum=_ZERO,
                maximum=Decimal(1),
                exclusive_minimum=True,
                help="fraction of capital held while fast > slow",
            ),
        }
    )

    def check_params(self, values: Mapping[str, ParamValue]) -> None:
        # fast >= slow would make the "crossover" meaningless (equal windows never cross).
        if not values["slow"] > values["fast"]:
            raise ValidationError(
                f"slow ({values['slow']}) must be greater than fast ({values['fast']})", field="slow"
            )

    @property
    def fast(self) -> int:
        return int(self.values["fast"])

    @property
    def slow(self) -> int:
        return int(self.values["slow"])

    @property
    def exposure(self) -> Decimal:
        return Decimal(self.values["exposure"])

    @property
    def warmup(self) -> int:
        return self.slow

    def decide(self, candles: Sequence[Candle], position_qty: Decimal) -> Decision:
        """Target `exposure` if SMA(fast) > SMA(slow), else 0; None while warming up.

        The target is returned even when the position already matches it: the order layer
        computes the difference and skips zero-size orders, so the strategy stays stateless.
        """
        if len(candles) < self.slow:
            return Decision(None, f"warming up: {len(candles)} of {self.slow} candles")
        closes = [c.close for c in candles[-self.slow :]]
        fast_sma = sum(closes[-self.fast :], _ZERO) / self.fast
        slow_sma = sum(closes, _ZERO) / self.slow
        last = closes[-1]
        fast_txt, slow_txt = _display(fast_sma, slow_sma, last)
        prefix = f"fast SMA({self.fast})={fast_txt}"
        suffix = f"slow SMA({self.slow})={slow_txt}, last close {last}"
        if fast_sma > slow_sma:
            return Decision(self.exposure, f"{prefix} > {suffix}: hold {_percent(self.exposure)} long")
        return Decision(_ZERO, f"{prefix} <= {suffix}: hold 0% (flat)")

    def target_at(self, candles: Sequence[Candle], index: int, position_qty: Decimal) -> Decimal | None:
        """`decide`'s target at bar `index`, from running sums: O(1) a bar instead of O(slow).

        Exact, not approximate: Decimal addition and subtraction of prices are exact at 28
        significant digits, so the running sums equal `decide`'s sums digit for digit, and the
        two averages (the same divisions) compare the same way.
        """
        run: _Running | None = getattr(self, "_running", None)
        if run is not None and run.candles is candles and run.index == index - 1:
            closes = run.closes
            close = closes[index]
            run.fast_sum += close - closes[index - run.fast]
            run.slow_sum += close - closes[index - run.slow]
            run.index = index
        else:
            if index + 1 < self.slow:
                return None
            closes = run.closes if run is not None and run.candles is candles else [c.close for c in candles]
            run = self._running = _Running(candles, closes, index, self)
        return run.exposure if run.fast_sum / run.fast > run.slow_sum / run.slow else _ZERO


class _Running:
    """Running sums of the closes of the series `SmaCross.target_at` is replaying."""

    __slots__ = ("candles", "closes", "exposure", "fast", "fast_sum", "index", "slow", "slow_sum")

    def __init__(self, candles: Sequence[Candle], closes: list[Decimal], index: int, strategy: SmaCross) -> None:
        self.candles, self.closes, self.index = candles, closes, index
        fast, slow = strategy.fast, strategy.slow
        self.fast, self.slow, self.exposure = fast, slow, strategy.exposure
        self.fast_sum = sum(closes[index - fast + 1 : index + 1], _ZERO)
        self.slow_sum = sum(closes[index - slow + 1 : index + 1], _ZERO)


def _display(a: Decimal, b: Decimal, like: Decimal) -> tuple[str, str]:
    """Both averages at the price's precision, with more digits only if needed to show a != b.

    Otherwise a reason could read "SMA=100.00 > SMA=100.00", which looks like a bug.
    """
    exponent = min(int(like.as_tuple().exponent), 0)
    while True:
        quantum = Decimal(1).scaleb(exponent)
        qa, qb = a.quantize(quantum), b.quantize(quantum)
        if qa != qb or a == b or exponent <= -12:
            return str(qa), str(qb)
        exponent -= 1


def _percent(fraction: Decimal) -> str:
    return f"{(fraction * 100).normalize():f}%"
