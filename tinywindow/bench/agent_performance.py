"""Agent performance: one run of the agent-performance task (`agent_performance_update`, beat every
5 minutes) over its 30-day window of portfolio snapshots, at 1,000 agents (100 with --quick).

The window is what the defaults keep: a snapshot a minute for the last 7 days (1 with --quick),
one an hour before that (thinned), each with its row per agent in `agents` JSON. The task folds
each snapshot once into `agent_equity_buckets`; the run measured is the steady state, with the
5 snapshots taken since the last run (5 minutes at one a minute) to fold. Baseline in the same
run: the same figures computed by reading every snapshot of the window, as the task did before
(each snapshot's row per agent expanded on every run). Both sides end in the same arithmetic
(`agent_performance_rows`); the upsert of the rows, the same for both, is left out. Goal: the
same figures for every agent, in less time than reading the window. The first run, which folds
the whole window once (after the upgrade), is shown too, against the same baseline.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tinywindow.bench.core import BenchContext, BenchRow, load_note

WINDOW_DAYS = 30
NEW_SNAPSHOTS = 5

# The task's reads before agent_equity_buckets: every snapshot of the window, each one's row per
# agent expanded (the first snapshot of each bucket for the series, all of them for the time held).
_WINDOW_EQUITY_SQL = """
WITH points AS (
    SELECT DISTINCT ON (date_bin(%(step)s, created_at, %(origin)s)) created_at, agents
    FROM portfolio_snapshots
    WHERE created_at >= %(start)s AND created_at <= %(end)s
    ORDER BY date_bin(%(step)s, created_at, %(origin)s), created_at, id
)
SELECT (a->>'agent_id')::bigint, p.created_at, a->>'equity'
FROM points p CROSS JOIN LATERAL jsonb_array_elements(p.agents) a
ORDER BY 1, 2
"""

_WINDOW_HELD_SQL = """
WITH s AS (
    SELECT created_at, LEAD(created_at, 1, %(end)s) OVER (ORDER BY created_at, id) AS next_at, agents
    FROM portfolio_snapshots
    WHERE created_at >= %(start)s AND created_at <= %(end)s
)
SELECT (a->>'agent_id')::bigint,
       COALESCE(SUM(EXTRACT(EPOCH FROM s.next_at - s.created_at))
                FILTER (WHERE (a->>'gross_exposure')::numeric > 0), 0),
       SUM(EXTRACT(EPOCH FROM s.next_at - s.created_at))
FROM s CROSS JOIN LATERAL jsonb_array_elements(s.agents) a
GROUP BY 1
"""

# One snapshot per time in `times`, each with a row per bench agent: an equity that swings over
# the hours, and an open position two hours in three.
_SNAPSHOTS_SQL = """
INSERT INTO portfolio_snapshots (equity, cash, gross_exposure, net_exposure, realized_pnl, unrealized_pnl,
                                 peak_equity, drawdown, open_orders, positions, agents, created_at)
SELECT 0, 0, 0, 0, 0, 0, 0, 0, 0, '[]'::jsonb,
       (SELECT jsonb_agg(jsonb_build_object(
            'agent_id', a.id, 'agent', a.name, 'capital', '10000.00',
            'equity', (10000 + 300 * sin(extract(epoch FROM t) / 3600 + a.id)
                       + (a.id %% 7) * extract(epoch FROM t) / 1e6)::numeric(20, 2)::text,
            'cash', '9000.00', 'realized_pnl', '0.00', 'unrealized_pnl', '0.00',
            'gross_exposure', CASE WHEN (a.id + extract(hour FROM t)::int) %% 3 = 0 THEN '0.00' ELSE '1000.00' END,
            'net_exposure', '1000.00', 'open_positions', 1, 'open_orders', 0) ORDER BY a.id)
        FROM agents a WHERE a.name LIKE 'bench-perf-%%'), t
FROM unnest(%(times)s::timestamptz[]) AS t
"""


def _window_series(*, start: datetime, end: datetime, step_seconds: int):
    """The baseline's reads: (equity series, time held) from every snapshot of the window."""
    from django.db import connection

    from trading.services.performance import _BEFORE_ALL

    series: dict[int, list[tuple[float, Decimal]]] = defaultdict(list)
    params = {"start": start, "end": end, "step": timedelta(seconds=step_seconds), "origin": _BEFORE_ALL}
    with connection.cursor() as cursor:
        cursor.execute(_WINDOW_EQUITY_SQL, params)
        for agent_id, at, equity in cursor.fetchall():
            series[agent_id].append((at.timestamp(), Decimal(equity)))
        cursor.execute(_WINDOW_HELD_SQL, params)
        held = {agent_id: (float(exposed), float(observed)) for agent_id, exposed, observed in cursor.fetchall()}
    return series, held


def _snapshot_times(now: datetime, minute_days: int) -> list[datetime]:
    minutes_from = now - timedelta(days=minute_days)
    hours = int((minutes_from - (now - timedelta(days=WINDOW_DAYS))).total_seconds() // 3600)
    return ([minutes_from - timedelta(hours=h) for h in range(hours, 0, -1)]
            + [minutes_from + timedelta(minutes=m) for m in range(minute_days * 1440 + 1)])


def _insert_snapshots(times: list[datetime]) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for i in range(0, len(times), 500):
            cursor.execute(_SNAPSHOTS_SQL, {"times": times[i:i + 500]})


def _clear() -> None:
    from django.db import connection

    from trading.models import Agent

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE portfolio_snapshots, agent_equity_buckets, agent_equity_progress, agent_performance")
    Agent.objects.filter(name__startswith="bench-perf-").delete()


def _figures(rows) -> dict[int, tuple]:
    return {row.agent_id: (row.equity_points, row.trades, row.total_pnl, row.win_rate, row.sharpe_ratio,
                           row.sortino_ratio, row.max_drawdown, row.profit_factor, row.exposure_time) for row in rows}


def run(ctx: BenchContext) -> list[BenchRow]:
    from django.conf import settings

    from trading.models import Agent
    from trading.services.performance import agent_equity_buckets_fold, agent_equity_series, agent_performance_rows

    agents, minute_days, rounds = (100, 1, 3) if ctx.quick else (1000, 7, 5)
    step = settings.AGENT_PERFORMANCE_RETURN_SECONDS
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    times = _snapshot_times(now - timedelta(minutes=NEW_SNAPSHOTS * (rounds + 1)), minute_days)

    def task_run(end: datetime):
        start = end - timedelta(days=WINDOW_DAYS)
        folded = agent_equity_buckets_fold(end=end, since=start, step_seconds=step)
        equity, held = agent_equity_series(start=start, end=end, folded=folded, step_seconds=step)
        return agent_performance_rows(start=start, end=end, step_seconds=step, equity=equity, held=held)

    def window_run(end: datetime):
        start = end - timedelta(days=WINDOW_DAYS)
        equity, held = _window_series(start=start, end=end, step_seconds=step)
        return agent_performance_rows(start=start, end=end, step_seconds=step, equity=equity, held=held)

    def timed(fn, end: datetime):
        started = time.perf_counter()
        rows = fn(end)
        return (time.perf_counter() - started) * 1000, _figures(rows)

    try:
        _clear()
        Agent.objects.bulk_create([
            Agent(name=f"bench-perf-{i}", strategy="trading.strategies.sma_cross.SmaCross", symbols=["BTC/USDT"],
                  timeframe="1m", capital=Decimal("10000"), status="stopped") for i in range(agents)],
            batch_size=1000)
        ctx.say(f"  {agents:,} agents, {len(times):,} snapshots over {WINDOW_DAYS} days "
                f"({minute_days} of them a snapshot a minute) ...")
        _insert_snapshots(times)
        end = times[-1] + timedelta(seconds=30)
        first_ms, first = timed(task_run, end)
        baseline_first_ms, baseline_first = timed(window_run, end)
        load = load_note()
        ctx.say(f"  first run {first_ms:,.0f} ms; {rounds} runs of {NEW_SNAPSHOTS} new snapshots each ({load}) ...")
        samples: list[float] = []
        baseline: list[float] = []
        same = first == baseline_first
        for _ in range(rounds):
            new = [times[-1] + timedelta(minutes=m + 1) for m in range(NEW_SNAPSHOTS)]
            _insert_snapshots(new)
            times += new
            end = times[-1] + timedelta(seconds=30)
            mine_ms, mine = timed(task_run, end)
            theirs_ms, theirs = timed(window_run, end)
            samples.append(mine_ms)
            baseline.append(theirs_ms)
            same = same and mine == theirs
    finally:
        _clear()
    steady, window = statistics.median(samples), statistics.median(baseline)
    what = f"{agents:,} agents × {len(times):,} snapshots"
    return [
        BenchRow("agent performance", f"a run with {NEW_SNAPSHOTS} new snapshots, {what}, median of {rounds} "
                 "(baseline: reading every snapshot of the window); same figures for every agent: "
                 f"{'yes' if same else 'NO'}", steady, window, "ms", "same figures, < 1×",
                 same and steady < window, note=load),
        BenchRow("agent performance", f"the first run, folding the whole window once, {what} "
                 "(baseline: reading every snapshot of the window)", first_ms, baseline_first_ms, "ms", "—", None),
    ]
