"""Is this market data fit to trade on? Staleness and gaps of a candle window.

`feed_health` is the one place that judges it. The tick calls it before every decision (a
stale or gapped window makes no order, and the decision says why); the stale-data circuit
breaker can call it on the same candles. Pure Python and cheap: no I/O, no Django.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from trading.feeds.base import Candle, require_aware, timeframe_seconds

__all__ = ["STALE_AFTER_CANDLES", "FeedHealth", "Gap", "feed_health"]

STALE_AFTER_CANDLES = 2
"""Default staleness limit, in candles. At any moment the newest CLOSED candle closed less than
one timeframe ago; one candle late can be a venue publishing slowly, two is a feed that stopped."""


@dataclass(frozen=True)
class Gap:
    """Candles missing between two consecutive candles: opens `start` .. `end` (exclusive)."""

    start: datetime  # open time of the first missing candle
    end: datetime  # open time of the candle after the gap
    missing: int

    def __str__(self) -> str:
        return f"{self.missing} candle(s) missing from {self.start.isoformat()} to {self.end.isoformat()}"


@dataclass(frozen=True)
class FeedHealth:
    """The verdict on one candle window.

    `stale`: the newest candle closed more than the limit before `now` (or there is none).
    `age_seconds`: seconds from the newest candle's CLOSE to `now`; None when there are no
    candles. Negative means the candle closes after `now` (a clock ahead of ours).
    `gaps`: holes between consecutive candles, oldest first.
    """

    stale: bool
    age_seconds: float | None
    gaps: list[Gap] = field(default_factory=list)
    max_age_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.stale and not self.gaps

    def describe(self) -> str:
        """One sentence for a decision reason or a log line, with the numbers."""
        problems = []
        if self.age_seconds is None:
            problems.append("no candles")
        elif self.stale:
            problems.append(
                f"stale: newest candle closed {self.age_seconds:.0f}s ago (limit {self.max_age_seconds:.0f}s)"
            )
        if self.gaps:
            missing = sum(g.missing for g in self.gaps)
            problems.append(f"gapped: {missing} candle(s) missing in {len(self.gaps)} gap(s), first {self.gaps[0]}")
        return "; ".join(problems) or "fresh, no gaps"


def feed_health(
    candles: Sequence[Candle], timeframe: str, now: datetime, *, max_age_seconds: float | None = None
) -> FeedHealth:
    """Judge `candles` (oldest first, as a Feed returns them) of `timeframe` at `now`.

    Stale when there are no candles, or the newest one closed more than `max_age_seconds` before
    `now` (default: STALE_AFTER_CANDLES timeframes). A gap is any step between consecutive
    candles' open times longer than one timeframe (a misaligned step counts as at least one
    missing candle). Fewer candles than asked for is not a gap:
    history may simply start there.
    """
    now = require_aware(now, "now")
    step = timeframe_seconds(timeframe)
    limit = float(max_age_seconds) if max_age_seconds is not None else float(STALE_AFTER_CANDLES * step)
    if not candles:
        return FeedHealth(stale=True, age_seconds=None, gaps=[], max_age_seconds=limit)
    newest_close = candles[-1].ts + timedelta(seconds=step)
    age = (now - newest_close).total_seconds()
    gaps = []
    for previous, current in zip(candles, candles[1:], strict=False):
        seconds = (current.ts - previous.ts).total_seconds()
        if seconds > step:
            gaps.append(
                Gap(
                    start=previous.ts + timedelta(seconds=step), end=current.ts,
                    missing=max(1, int(seconds // step) - 1),
                )
            )
    return FeedHealth(stale=age > limit, age_seconds=age, gaps=gaps, max_age_seconds=limit)
