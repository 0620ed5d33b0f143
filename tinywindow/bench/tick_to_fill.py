"""Tick to fill: latency from a `tick_agent` enqueue to the order's first paper fill.

One agent whose strategy always wants to trade (`tinywindow.bench.strategies.Alternate`: flat →
long 0.5 → flat ...), on the synthetic feed and the paper venue. Each tick is enqueued with
nothing else in flight and runs the whole production path: strategy worker (`-Q strategy`)
→ decision → pre-trade checks → `pending` order committed → `execute_order` on the engine
(`-Q safety,execution`) → kill-switch/breaker re-check under the trading gate → paper venue
fill. Measured: wall clock at the enqueue → the fill's `executed_at` (stamped by the venue).

Baseline: a bare two-hop Celery chain through the same worker processes — task A on the
strategy worker enqueues task B on the engine worker, which records the time — from A's
enqueue to B's run. TinyWindow's ticks and the bare chains alternate one by one, so both see
the same machine. The loss breakers and the per-minute order limit are raised out of reach
(the flat/long churn pays fees every round trip); every check still runs.

The book is not empty: it holds a history of finished orders of 1,000 other agents (200,000 in
the full run, 20,000 with --quick; tinywindow.bench.runbook_queries.seed), as a desk's would
after some months, so that a read on the path that grows with the table shows here.
Goal (issue 10): p50 at most 1.5× the bare p50, p99 at most 2× the bare p99.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

from tinywindow.bench.core import BenchContext, BenchRow, Worker, load_note, percentile, reset_book, wait_for

SYMBOL = "BTC/USDT"
OUT_OF_REACH = Decimal("1000000000")


def _relax_limits() -> None:
    """The churn loses fees on every round trip: keep the loss breakers and the rate limit from stopping it."""
    from safety.models import CircuitBreakerConfig, RiskLimit

    CircuitBreakerConfig.objects.filter(kind__in=["daily_loss", "drawdown", "consecutive_losses"]).update(
        threshold=OUT_OF_REACH)
    RiskLimit.objects.filter(agent__isnull=True).update(max_orders_per_minute=1_000_000)


def _agent():
    from trading.models import Agent
    from trading.services.agents import agent_create

    Agent.objects.filter(name__startswith="bench-ttf-").update(status="stopped")
    return agent_create(name=f"bench-ttf-{int(time.time() * 1000)}", strategy="tinywindow.bench.strategies.Alternate",
                        params={"exposure": "0.5"}, symbols=[SYMBOL], capital=Decimal("2000"))


# Where one tick's time goes, from the timestamps the system stores anyway (each relative to the
# enqueue): the agent's `last_tick_at` (the tick's `now`, after the broker hop and the tick lock),
# the order's `created_at` (its insert, after the decision and the pre-trade checks),
# `submitted_at` (the engine holds the gate and the order lock, after the second hop) and the
# fill's `executed_at` (the venue's trade). Printed with the result: it says what limits it.
STAGES = ("tick started", "order inserted", "engine sending", "filled")


class _Ticker:
    def __init__(self, agent_id: int) -> None:
        from trading.models import Order

        self.agent_id = agent_id
        self.last_order = Order.objects.filter(agent_id=agent_id).order_by("-pk").values_list("pk", flat=True).first()
        self.last_order = self.last_order or 0
        self.stages: list[tuple[float, ...]] = []

    def once(self) -> float:
        """One tick, alone in flight: seconds from its enqueue to its order's first fill."""
        from tinywindow.redis_client import get_redis
        from trading.models import Agent, Fill, Order
        from trading.order_states import OPEN_STATUSES
        from trading.tasks import TICK_LOCK_KEY, tick_agent

        found: list[tuple] = []

        def order_done() -> bool:
            row = (Order.objects.filter(agent_id=self.agent_id, pk__gt=self.last_order).order_by("pk")
                   .values_list("pk", "status", "reject_reason").first())
            if row and row[1] not in OPEN_STATUSES:
                found.append(row)
                return True
            return False

        enqueued = time.time()
        tick_agent.delay(self.agent_id)
        try:
            wait_for(order_done, timeout=30, interval=0.005, what="the tick's order to be filled")
        except TimeoutError:
            decision = Agent.objects.filter(pk=self.agent_id).values_list("last_decision", flat=True).first()
            raise RuntimeError(f"tick made no finished order in 30 s; last decision: {decision!r}") from None
        pk, status, reason = found[0]
        if status != "executed":
            raise RuntimeError(f"the tick's order {pk} ended {status}: {reason}")
        self.last_order = pk
        filled = Fill.objects.filter(order_id=pk).order_by("executed_at").values_list("executed_at", flat=True)[0]
        created, submitted = Order.objects.filter(pk=pk).values_list("created_at", "submitted_at")[0]
        started = Agent.objects.filter(pk=self.agent_id).values_list("last_tick_at", flat=True)[0]
        self.stages.append(tuple(at.timestamp() - enqueued for at in (started, created, submitted, filled)))
        redis = get_redis()
        lock = TICK_LOCK_KEY.format(agent_id=self.agent_id)
        wait_for(lambda: not redis.exists(lock), timeout=30, interval=0.005, what="the tick to finish")
        return filled.timestamp() - enqueued


def _chain_once() -> float:
    """One bare two-hop chain, alone in flight: seconds from A's enqueue to B's run."""
    from tinywindow.bench.tasks import hop_first
    from tinywindow.redis_client import get_redis

    redis = get_redis()
    key = f"tinywindow:bench:hop:{uuid.uuid4().hex}"
    enqueued = time.time()
    hop_first.delay(key)
    wait_for(lambda: redis.exists(key), timeout=30, interval=0.005, what="the bare chain's second hop")
    ran = float(redis.get(key))
    redis.delete(key)
    return ran - enqueued


def run(ctx: BenchContext) -> list[BenchRow]:
    from tinywindow.bench import runbook_queries, tasks

    n, warm, history = (40, 5, 20_000) if ctx.quick else (300, 10, 200_000)
    reset_book()
    runbook_queries.seed(ctx, history, copies=False)
    _relax_limits()
    agent = _agent()
    ticker = _Ticker(agent.pk)
    strategy = Worker(f"strategy,{tasks.BENCH_STRATEGY_QUEUE}", name="bench-ttf-strategy", concurrency=2,
                      log_dir=ctx.log_dir, include=tasks.MODULE)
    engine = Worker(f"safety,execution,{tasks.BENCH_QUEUE}", name="bench-ttf-engine", concurrency=2,
                    log_dir=ctx.log_dir, include=tasks.MODULE)
    tw: list[float] = []
    bare: list[float] = []
    try:
        strategy.wait_ready()
        engine.wait_ready()
        ctx.say(f"  warm-up: {warm} ticks, {warm} bare chains ...")
        for _ in range(warm):
            ticker.once()
            _chain_once()
        load = load_note()
        ctx.say(f"  {n} ticks and {n} bare chains, alternating ({load}) ...")
        ticker.stages.clear()
        for _ in range(n):
            tw.append(ticker.once())
            bare.append(_chain_once())
    finally:
        engine.stop()
        strategy.stop()
        runbook_queries.clear()
    ms = 1000
    stages = ", ".join(f"{name} {percentile(list(times), 50) * ms:.1f}" for name, times in
                       zip(STAGES, zip(*ticker.stages, strict=True), strict=True))
    ctx.say(f"  tick stages, p50 ms after the enqueue: {stages}; bare chain p50 {percentile(bare, 50) * ms:.1f}")
    rows = []
    for pct, factor in ((50, Decimal("1.5")), (99, Decimal("2"))):
        ours, base = percentile(tw, pct) * ms, percentile(bare, pct) * ms
        rows.append(BenchRow("tick to fill", f"tick_agent enqueued → first paper fill, p{pct} of {n} sequential "
                             f"ticks, {history:,} orders in the book, vs bare two-hop chain (strategy worker → "
                             "engine worker)", ours, base, "ms",
                             f"≤ {factor}× bare p{pct}", ours <= float(factor) * base,
                             note=load if pct != 50 else f"{load}; p50 ms after the enqueue: {stages}"))
    return rows
