"""Batch ticks (trading/services/ticks.py): many agents per task, for agents on slow timeframes.

A real strategy worker runs the batches; what is asserted is correctness, never time: every due
agent is ticked exactly once (also when a batch is delivered twice), agents that are not due or
not active are not, and the orders are the ones single ticks of identical agents make.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import wait_for_worker
from tests.factories import make_agent
from tests.helpers import wait_until
from trading.models import Agent, Order
from trading.services.agents import agent_schedules_resync, agent_tick
from trading.services.orders import decision_client_order_id
from trading.services.ticks import agent_ticks_dispatch
from trading.tasks import tick_agents

D = Decimal

# Identical definitions for the batch fleet and the single-tick fleet: strategies that order at
# once (AlwaysLong) and ones that decide on the candles (SMA, RSI, Donchian), several symbols.
FLEET = [
    ("tests.strategies.AlwaysLong", {"exposure": "0.5"}, ["BTC/USDT"]),
    ("trading.strategies.sma_cross.SmaCross", {"fast": 2, "slow": 4, "exposure": "0.5"}, ["ETH/USDT"]),
    ("trading.strategies.sma_cross.SmaCross", {"fast": 3, "slow": 6, "exposure": "0.4"}, ["SOL/USDT", "BNB/USDT"]),
    ("trading.strategies.rsi_reversion.RsiReversion", {"period": 2, "oversold": "60", "exit_level": "65"},
     ["BTC/USDT"]),
    ("trading.strategies.donchian_breakout.DonchianBreakout", {"entry": 2, "exit": 2}, ["ETH/USDT"]),
    ("tests.strategies.AlwaysLong", {"exposure": "0.3"}, ["XRP/USDT", "ADA/USDT"]),
]


def _fleet(prefix: str, copies: int, tick_seconds: int) -> list[Agent]:
    return [make_agent(name=f"{prefix}-{copy}-{i}", strategy=path, params=params, symbols=symbols,
                       capital=D("20000"), timeframe="1h", tick_seconds=tick_seconds)
            for copy in range(copies) for i, (path, params, symbols) in enumerate(FLEET)]


def _orders(agent: Agent) -> list[tuple]:
    return sorted(Order.objects.filter(agent=agent).values_list("symbol", "side", "quantity", "reduce_only",
                                                                  "decision_reason", "status"))


def _ticks_by_agent(metrics_dir: str) -> Counter:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)
    counts: Counter = Counter()
    for family in registry.collect():
        if family.name == "tinywindow_ticks":
            for sample in family.samples:
                if sample.name == "tinywindow_ticks_total":
                    counts[sample.labels["agent"]] += int(sample.value)
    return counts


def test_batch_ticks_when_run_by_a_real_worker_and_redelivered_then_each_agent_once_and_orders_as_single_ticks(
        start_worker, worker_env):
    # Both fleets must decide on the same closed hourly candle: keep clear of the hour's turn.
    wait_until(lambda: timezone.now().minute < 59, timeout=70, message="the hour's last minute to pass")
    batch = _fleet("batch", copies=2, tick_seconds=60)
    single = _fleet("single", copies=2, tick_seconds=60)
    paused = make_agent(name="batch-paused", tick_seconds=60, timeframe="1h")
    Agent.objects.filter(pk=paused.pk).update(status="paused")
    # Batch-ticked agents keep their beat entry for the admin, disabled: the dispatcher ticks them.
    assert not batch[0].periodic_task.enabled and "batches" in batch[0].periodic_task.description

    worker = start_worker("strategy,default", name="batch")
    wait_for_worker(worker)
    due = timezone.now()
    ids = [agent.pk for agent in batch]
    half = len(ids) // 2
    sent = [tick_agents.apply_async(kwargs={"agent_ids": chunk + [paused.pk], "due": due.isoformat()})
            for chunk in (ids[:half], ids[half:], ids[:half])]  # the first batch delivered twice
    wait_until(lambda: all(f"Task trading.tasks.tick_agents[{task.id}] succeeded" in worker.log() for task in sent),
               timeout=60, message="the three batches to finish")
    for agent in single:
        agent_tick(agent_id=agent.pk, tick_id="single")

    ticks = _ticks_by_agent(worker_env["PROMETHEUS_MULTIPROC_DIR"])
    assert {agent.name: ticks[agent.name] for agent in batch} == {agent.name: 1 for agent in batch}
    assert ticks[paused.name] == 0 and Agent.objects.get(pk=paused.pk).last_tick_at is None
    for ours, theirs in zip(batch, single, strict=True):
        assert Agent.objects.get(pk=ours.pk).last_tick_at >= due
        assert _orders(ours) == _orders(theirs), (ours.name, ours.strategy)
        assert Agent.objects.get(pk=ours.pk).last_decision == Agent.objects.get(pk=theirs.pk).last_decision
    made = sum(len(_orders(agent)) for agent in batch)
    assert made >= 4, "the fleet's AlwaysLong agents order on their first tick"
    # Orders are named by (agent, symbol, due time): the same bar cannot order twice.
    tick_id = f"due-{int(due.timestamp())}"
    for order in Order.objects.filter(agent__in=batch):
        assert order.client_order_id == decision_client_order_id(agent_id=order.agent_id, symbol=order.symbol,
                                                                 tick_id=tick_id)


@pytest.mark.django_db
def test_dispatch_when_a_minute_passes_second_by_second_then_each_active_batch_agent_due_exactly_once():
    minute = [make_agent(name=f"minute-{i}", tick_seconds=60) for i in range(7)]
    slow = [make_agent(name=f"slow-{i}", tick_seconds=120) for i in range(3)]
    fast = make_agent(name="fast", tick_seconds=5)  # its own beat entry, never batched
    paused = make_agent(name="paused", tick_seconds=60)
    Agent.objects.filter(pk=paused.pk).update(status="paused")
    sent: list[tuple[list[int], datetime, int]] = []

    def enqueue(agent_ids: list[int], due: datetime, expires: int) -> None:
        sent.append((agent_ids, due, expires))

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    assert agent_ticks_dispatch(now=start, enqueue=enqueue) >= 0  # first run: this second only
    for second in range(1, 121):
        agent_ticks_dispatch(now=start + timedelta(seconds=second), enqueue=enqueue)
    # Replaying a second already dispatched sends nothing (the watermark).
    before = len(sent)
    agent_ticks_dispatch(now=start + timedelta(seconds=120), enqueue=enqueue)
    assert len(sent) == before

    dues = Counter(agent_id for ids, _, _ in sent for agent_id in ids)
    window = [start + timedelta(seconds=s) for s in range(121)]
    for agent in minute:  # two minutes: due twice, at its own second of the minute
        expected = sum(1 for moment in window if int(moment.timestamp()) % 60 == agent.pk % 60)
        assert dues[agent.pk] == expected, (agent.pk, dues[agent.pk], expected)
    for agent in slow:
        expected = sum(1 for moment in window if int(moment.timestamp()) % 120 == agent.pk % 120)
        assert dues[agent.pk] == expected
    assert dues[fast.pk] == 0 and dues[paused.pk] == 0
    for ids, due, expires in sent:
        interval = Agent.objects.get(pk=ids[0]).tick_seconds
        assert expires == interval and all(int(due.timestamp()) % interval == pk % interval for pk in ids)


@pytest.mark.django_db
def test_resync_when_batch_threshold_changes_then_beat_entries_follow(settings):
    minute = make_agent(name="resync-minute", tick_seconds=60)
    fast = make_agent(name="resync-fast", tick_seconds=5)
    assert not minute.periodic_task.enabled and fast.periodic_task.enabled
    settings.AGENT_TICK_BATCH_MIN_SECONDS = 0  # batching off: every agent back on its own entry
    assert agent_schedules_resync() == 1
    minute.periodic_task.refresh_from_db()
    assert minute.periodic_task.enabled
    settings.AGENT_TICK_BATCH_MIN_SECONDS = 5  # everything batched
    assert agent_schedules_resync() == 2
    for agent in (minute, fast):
        agent.periodic_task.refresh_from_db()
        assert not agent.periodic_task.enabled
    assert agent_schedules_resync() == 0  # nothing left to change
