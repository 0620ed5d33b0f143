"""Strategies for benchmarks: real Strategy subclasses that worker processes load by dotted path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar

from trading.feeds.base import Candle
from trading.strategies.base import Decision, Param, Strategy


class Alternate(Strategy):
    """Always wants to trade: flat → `exposure` of capital, holding → flat. Every tick makes an order."""

    name: ClassVar[str] = "bench_alternate"
    param_specs: ClassVar[Mapping[str, Param]] = MappingProxyType(
        {"exposure": Param(Decimal("0.5"), Decimal, minimum=Decimal(0), maximum=Decimal(1), exclusive_minimum=True)}
    )

    @property
    def warmup(self) -> int:
        return 1

    def decide(self, candles: Sequence[Candle], position_qty: Decimal) -> Decision:
        if position_qty > 0:
            return Decision(Decimal(0), f"bench: holding {position_qty}, go flat")
        exposure = Decimal(self.values["exposure"])
        return Decision(exposure, f"bench: flat, go long {exposure}")


class Idle(Strategy):
    """Never wants anything: the agent-scale baseline (a tick's cost without the strategy's own work)."""

    name: ClassVar[str] = "bench_idle"
    param_specs: ClassVar[Mapping[str, Param]] = MappingProxyType({})

    @property
    def warmup(self) -> int:
        return 1

    def decide(self, candles: Sequence[Candle], position_qty: Decimal) -> Decision:
        return Decision(None, "bench: idle")
