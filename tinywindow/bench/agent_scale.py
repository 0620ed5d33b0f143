"""Agent scale: how many agents on a 60 s timeframe the strategy workers of a 2-core machine keep
up with, ticking each within a second of its due time (p99), with batch ticks.

Agents: SMA crossover (fast 5, slow 20) on one-minute candles of the synthetic feed, ten
symbols, paper venue; each already has one order open, so every tick runs the whole decision
(agent row, candles, health check, strategy, position, open-order check, decision stored) and
then waits on that order instead of placing another — the order path has its own scenarios.
Production's batch ticking (trading/services/ticks.py) runs them: the bench plays beat, sending
`dispatch_agent_ticks` every second; one strategy worker (`-Q strategy,default -c 2`, as
`manage.py up` starts it) runs the `tick_agents` batches.

Two measures, each against the same agents running a no-op strategy (the baseline):
- capacity: every agent due at once, batches enqueued together; agents ticked per second while
  draining, × 60 = the agents a 60 s timeframe could hold at best;
- tick lag, sustained: agents spread over the interval (each due at its own second), beat
  dispatching; lag = the tick's decision time − its due second, p99 over every tick of the
  measured intervals (a tick not done by the end counts as late by then). The full run uses
  10,000 agents at 60 s; the quick one the same ticks per second at a 5 s interval (833
  agents), so it finishes in seconds.
Goal (issue 10): ≥ 10,000 agents at 60 s with p99 lag < 1 s.

And the safety system at that scale: one full circuit-breaker check (what beat sends the engine
every BREAKER_CHECK_SECONDS) with the sustained run's agents active must finish within that
period, or an engine process never gets out of it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

from tinywindow.bench.core import BenchContext, BenchRow, Worker, load_note, percentile, wait_for

GOAL_AGENTS = 10_000
GOAL_LAG_S = 1.0
SYMBOLS = [f"{base}/USDT" for base in ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK")]
REAL = ("trading.strategies.sma_cross.SmaCross", {"fast": 5, "slow": 20, "exposure": "0.5"})
IDLE = ("tinywindow.bench.strategies.Idle", {})
PREFIX = "bench-scale-"


def _seed(n: int, tick_seconds: int) -> list[int]:
    """`n` active agents ticked in batches, each with one open order; returns their ids."""
    from django.db import connection

    from trading.models import Agent, Order

    Agent.objects.filter(name__startswith=PREFIX).update(status="stopped")
    stamp = int(time.time())
    made = Agent.objects.bulk_create([
        Agent(name=f"{PREFIX}{stamp}-{i}", strategy=REAL[0], params=REAL[1], symbols=[SYMBOLS[i % len(SYMBOLS)]],
              timeframe="1m", feed="synthetic", exchange="paper", capital=Decimal("10000"), tick_seconds=tick_seconds)
        for i in range(n)], batch_size=2000)
    Order.objects.bulk_create([
        Order(client_order_id=f"{PREFIX}{agent.pk}", agent=agent, exchange="paper", mode="paper",
              symbol=agent.symbols[0], side="buy", quantity=Decimal("0.001"), status="submitted") for agent in made],
        batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE agents; ANALYZE orders; ANALYZE positions")
    return [agent.pk for agent in made]


def _use(ids: list[int], strategy: tuple[str, dict], *, tick_seconds: int) -> None:
    from trading.models import Agent

    Agent.objects.filter(pk__in=ids).update(strategy=strategy[0], params=strategy[1], tick_seconds=tick_seconds,
                                            last_tick_at=None, status="active")


def _capacity(ctx: BenchContext, ids: list[int], label: str) -> float:
    """Ticks per second while every agent is due at once."""
    from django.conf import settings

    from trading.models import Agent
    from trading.tasks import tick_agents

    due = datetime.now(UTC)
    size = settings.AGENT_TICK_BATCH_SIZE
    ctx.say(f"  capacity, {label}: {len(ids):,} agents due at once, {len(ids) // size + 1} batches ...")
    started = time.perf_counter()
    for chunk in range(0, len(ids), size):
        tick_agents.apply_async(kwargs={"agent_ids": ids[chunk:chunk + size], "due": due.isoformat()})
    wait_for(lambda: not Agent.objects.filter(pk__in=ids, last_tick_at__lt=due).exists()
             and not Agent.objects.filter(pk__in=ids, last_tick_at__isnull=True).exists(),
             timeout=600, interval=0.1, what="every agent to be ticked")
    return len(ids) / (time.perf_counter() - started)


def _lags(ctx: BenchContext, ids: list[int], tick_seconds: int, intervals: int, label: str) -> list[float]:
    """Play beat for one warm-up and `intervals` measured intervals; the measured ticks' lags (s)."""
    from django.db import connection

    from trading.tasks import dispatch_agent_ticks

    lags: list[float] = []
    started = time.time()
    samples = [started + tick_seconds * (k + 2) for k in range(intervals)]  # after the warm-up interval
    ctx.say(f"  sustained, {label}: {len(ids):,} agents every {tick_seconds} s, beat every second, "
            f"{intervals} measured interval(s) after one warm-up ({load_note()}) ...")
    while samples:
        dispatch_agent_ticks.apply_async(queue="strategy", expires=1)
        now = time.time()
        if now >= samples[0]:
            samples.pop(0)
            # Each agent's newest tick, against its due second (phase = id % interval); one sample
            # per agent per interval. A tick older than one interval (+1 s) is late by now.
            with connection.cursor() as cursor:
                cursor.execute("SELECT id, extract(epoch FROM last_tick_at) FROM agents WHERE id = ANY(%s)", [ids])
                for agent_id, at in cursor.fetchall():
                    phase = agent_id % tick_seconds
                    if at is None or now - float(at) > tick_seconds + 1:
                        due = now - ((now - phase) % tick_seconds)
                        lags.append(now - due if at is None or float(at) < due else 0.0)
                    else:
                        lags.append((float(at) - phase) % tick_seconds)
        time.sleep(max(0.0, 1 - (time.time() % 1)))  # beat's cadence: once a second
    return lags


def run(ctx: BenchContext) -> list[BenchRow]:
    from django.conf import settings

    from tinywindow.bench.core import reset_book
    from trading.models import Agent

    if ctx.quick:
        n_capacity, tick_seconds, intervals = 400, 5, 1
    else:
        n_capacity, tick_seconds, intervals = 5_000, 60, 2
    n_sustained = GOAL_AGENTS * tick_seconds // 60
    reset_book()
    ctx.say(f"  seeding {max(n_capacity, n_sustained):,} agents (batch size {settings.AGENT_TICK_BATCH_SIZE}) ...")
    ids = _seed(max(n_capacity, n_sustained), tick_seconds)
    # The quick run's 5 s interval must count as slow enough to batch (production: from 60 s).
    worker = Worker("strategy,default", name="bench-scale-strategy", concurrency=2, log_dir=ctx.log_dir,
                    extra_env={"AGENT_TICK_BATCH_MIN_SECONDS": str(min(tick_seconds, 60))})
    rates: dict[str, float] = {}
    lags: dict[str, list[float]] = {}
    try:
        worker.wait_ready()
        _use(ids[:50], REAL, tick_seconds=tick_seconds)
        _capacity(ctx, ids[:50], "warm-up")
        load = load_note()
        for label, strategy in (("SMA cross", REAL), ("no-op strategy", IDLE)):
            Agent.objects.filter(pk__in=ids).update(status="stopped")
            _use(ids[:n_capacity], strategy, tick_seconds=tick_seconds)
            rates[label] = _capacity(ctx, ids[:n_capacity], label)
            Agent.objects.filter(pk__in=ids).update(status="stopped")
            _use(ids[:n_sustained], strategy, tick_seconds=tick_seconds)
            lags[label] = _lags(ctx, ids[:n_sustained], tick_seconds, intervals, label)
            ctx.say(f"    lag p50 {percentile(lags[label], 50):.3f} s, p90 {percentile(lags[label], 90):.3f} s, "
                    f"max {max(lags[label]):.3f} s")
        Agent.objects.filter(pk__in=ids).update(status="stopped")
        _use(ids[:n_sustained], REAL, tick_seconds=tick_seconds)
        check_seconds, breakers = _breaker_check(ctx, n_sustained)
    finally:
        Agent.objects.filter(pk__in=ids).update(status="stopped")
        worker.stop()
        reset_book()
        Agent.objects.filter(name__startswith=PREFIX).delete()  # the scenarios after this one value every agent
    ours, base = rates["SMA cross"] * 60, rates["no-op strategy"] * 60
    p99, base_p99 = percentile(lags["SMA cross"], 99), percentile(lags["no-op strategy"], 99)
    return [
        BenchRow("agent scale", f"agents a 60 s timeframe holds: batch-tick throughput × 60, {n_capacity:,} agents "
                 "due at once, 1 strategy worker × 2 (baseline: no-op strategy)", ours, base, "agents",
                 f"≥ {GOAL_AGENTS:,} agents", ours >= GOAL_AGENTS, note=load),
        BenchRow("agent scale", f"tick lag p99, {n_sustained:,} agents every {tick_seconds} s"
                 + (f" (= {GOAL_AGENTS:,} at 60 s)" if tick_seconds != 60 else "")
                 + f", {len(lags['SMA cross']):,} ticks (baseline: no-op strategy)", p99, base_p99, "s",
                 f"< {GOAL_LAG_S:.0f} s", p99 < GOAL_LAG_S, note=load),
        BenchRow("circuit breakers", f"full check of all {breakers} breakers (beat's, every "
                 f"{settings.BREAKER_CHECK_SECONDS} s) at {n_sustained:,} active agents, median of {CHECK_RUNS}",
                 check_seconds, None, "s", f"< {settings.BREAKER_CHECK_SECONDS} s (its period)",
                 check_seconds < settings.BREAKER_CHECK_SECONDS, note=load),
    ]


CHECK_RUNS = 3


def _breaker_check(ctx: BenchContext, n: int) -> tuple[float, int]:
    """Seconds of one full circuit-breaker check (the periodic one: every breaker, every agent
    of the agent-scoped ones) with these agents active, and how many breakers it checks. Beat
    sends it every BREAKER_CHECK_SECONDS to the engine: one that takes longer keeps an engine
    process busy for good. Run here, in the bench process: the same function the task runs."""
    from safety.models import CircuitBreakerConfig
    from safety.services.breakers import breakers_check

    ctx.say(f"  full circuit-breaker check at {n:,} active agents: first (creates their state rows), "
            f"then {CHECK_RUNS} ...")
    breakers_check()
    times = []
    for _ in range(CHECK_RUNS):
        started = time.perf_counter()
        breakers_check()
        times.append(time.perf_counter() - started)
    return percentile(times, 50), CircuitBreakerConfig.objects.filter(enabled=True).count()
