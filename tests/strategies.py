"""Strategies for tests only: real Strategy subclasses, loaded by dotted path like any other.

They live in an importable module (not a test file) so that Celery worker processes started
by the tests can load them too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar

from trading.feeds.base import Candle
from trading.strategies.base import Decision, Param, Strategy

# Gated: a tick that stays inside `decide` until the test opens the gate (in-process threads).
GATE = threading.Event()
ENTERED = threading.Event()
CALLS: list[int] = []


class Gated(Strategy):
    """Blocks in `decide` until GATE is set: a slow tick whose length the test controls."""

    name: ClassVar[str] = "gated"

    @property
    def warmup(self) -> int:
        return 1

    def decide(self, candles: Sequence[Candle], position_qty: Decimal) -> Decision:
        CALLS.append(1)
        ENTERED.set()
        GATE.wait(timeout=30)
        return Decision(None, "gated tick done")


class AlwaysLong(Strategy):
    """Wants `exposure` of capital at every tick: any tick that runs makes an order if flat."""

    name: ClassVar[str] = "always_long"
    param_specs: ClassVar[Mapping[str, Param]] = MappingProxyType(
        {"exposure": Param(Decimal("0.5"), Decimal, minimum=Decimal(0), maximum=Decimal(1), exclusive_minimum=True)}
    )

    @property
    def warmup(self) -> int:
        return 1

    def decide(self, candles: Sequence[Candle], position_qty: Decimal) -> Decision:
        exposure = Decimal(self.values["exposure"])
        return Decision(exposure, f"always long {exposure}")


class Sleepy(Strategy):
    """A decision that takes 30 s (a hung feed or model): stopped by the tick's soft time limit."""

    name: ClassVar[str] = "sleepy"

    @property
    def warmup(self) -> int:
        return 1

    def decide(self, candles: Sequence[Candle], position_qty: Decimal) -> Decision:
        time.sleep(30)
        return Decision(None, "slept")


class Runaway(Strategy):
    """Swallows every exception for a minute, the soft time limit's included (a bare `except`
    around a loop): only the hard time limit, which kills the process, stops it."""

    name: ClassVar[str] = "runaway"

    @property
    def warmup(self) -> int:
        return 1

    def decide(self, candles: Sequence[Candle], position_qty: Decimal) -> Decision:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                time.sleep(0.05)
            except BaseException:  # noqa: S110, BLE001 - the bug this strategy stands for
                pass
        return Decision(None, "ran away")
