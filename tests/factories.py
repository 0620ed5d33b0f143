"""Test data built through the same services production uses."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from trading.feeds.base import Candle, floor_time, timeframe_seconds

_names = itertools.count(1)


def make_agent(**overrides):
    from trading.services.agents import agent_create

    spec = {
        "name": f"agent-{next(_names)}",
        "strategy": "trading.strategies.sma_cross.SmaCross",
        "params": {"fast": 2, "slow": 4, "exposure": "0.5"},
        "symbols": ["BTC/USDT"],
        "capital": Decimal("10000"),
        "timeframe": "5s",
        "tick_seconds": 5,
    }
    spec.update(overrides)
    return agent_create(**spec)


@dataclass
class FixedPriceFeed:
    """A feed whose price the test sets; candles are flat at that price unless a path is given."""

    price: Decimal
    path: list[Decimal] | None = None
    volume: Decimal = Decimal("1000")
    name: str = "fixed"

    def candles(self, symbol: str, timeframe: str, *, limit: int, end: datetime) -> list[Candle]:
        step = timedelta(seconds=timeframe_seconds(timeframe))
        last_open = floor_time(end, timeframe) - step
        closes = (self.path or [self.price] * limit)[-limit:]
        first = last_open - step * (len(closes) - 1)
        return [Candle(first + step * i, c, c, c, c, self.volume) for i, c in enumerate(closes)]

    def last_price(self, symbol: str, at: datetime) -> Decimal:
        return self.price
