"""The demo agents keep trading on the synthetic feed: a fresh `manage.py up` must show orders
within a couple of minutes, from each of three different strategies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tinywindow.bootstrap import DEMO_AGENTS
from trading.feeds.synthetic import SyntheticFeed
from trading.strategies.base import load_strategy

FEED = SyntheticFeed(seed=42)  # the default SYNTHETIC_FEED_SEED
STEP = timedelta(seconds=5)
START = datetime(2026, 3, 17, 9, tzinfo=UTC)


def position_changes(spec: dict, start: datetime, ticks: int) -> list[int]:
    """Tick numbers at which the agent would go long or flat, ticking every 5 s from `start`."""
    strategy = load_strategy(spec["strategy"], spec["params"])
    window = strategy.warmup + 1
    history = FEED.candles(spec["symbols"][0], "5s", limit=window + ticks, end=start + STEP * ticks)
    exposure, changes = Decimal(0), []
    for tick in range(ticks):
        decision = strategy.decide(history[tick + 1 : tick + 1 + window], exposure)
        if decision.target_exposure is not None and decision.target_exposure != exposure:
            exposure = decision.target_exposure
            changes.append(tick)
    return changes


def test_demo_agents_when_created_then_three_different_strategies():
    assert len({spec["strategy"] for spec in DEMO_AGENTS}) == 3


@pytest.mark.parametrize("spec", DEMO_AGENTS, ids=[spec["name"] for spec in DEMO_AGENTS])
def test_demo_agent_when_run_for_an_hour_then_trades_at_least_a_dozen_times(spec):
    changes = position_changes(spec, START, ticks=720)
    assert len(changes) >= 12, f"{spec['name']}: {len(changes)} entries/exits in an hour"


def test_demo_when_started_at_any_of_several_times_then_first_trade_within_two_minutes():
    for minutes in range(0, 240, 20):
        start = START + timedelta(minutes=minutes)
        firsts = [changes[0] for spec in DEMO_AGENTS if (changes := position_changes(spec, start, ticks=24))]
        assert firsts, f"no demo agent traded in the 2 minutes after {start.isoformat()}"
