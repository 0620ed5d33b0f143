"""Agent performance over a rolling window (beat every AGENT_PERFORMANCE_SECONDS).

The figures are `trading.analytics.performance_figures` (pure, shared with the backtester);
this module only gathers their inputs, in a constant number of queries for all agents:

- equity series: each agent's `equity` from the `agents` JSON of `portfolio_snapshots`, one
  point per AGENT_PERFORMANCE_RETURN_SECONDS bucket (the first snapshot of the bucket: the
  same row thinning keeps, so the figures do not change when old rows are thinned);
- trades: orders whose fills in the window realized PnL (fees included), one PnL per order;
- exposure: time-weighted over all snapshots in the window (each snapshot holds until the next).

A run does not read every snapshot of the window: each snapshot is folded once into
`agent_equity_buckets` (a row per agent and bucket: the first equity, the time held), after the
next snapshot exists. A run folds the snapshots since the last run and reads those rows, plus
the newest snapshot, whose time runs until the end of the window. A bucket is in the window when
its first snapshot is.

Definitions and edge cases: docs/metrics.md, "Agent performance figures".
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from trading.analytics import PerformanceFigures, performance_figures, periods_per_year_for
from trading.models import Agent, AgentEquityBucket, AgentEquityProgress, AgentPerformance, Fill

logger = logging.getLogger(__name__)

# Buckets are aligned to the Unix epoch (the `origin` parameter below: hourly buckets are clock
# hours), as in snapshot thinning. It also stands for "nothing folded yet".
_BEFORE_ALL = datetime(1970, 1, 1, tzinfo=UTC)

# Folds the snapshots taken since the last run into agent_equity_buckets: each snapshot whose
# next one exists adds the time it held (until that next one) to its bucket, and the first
# snapshot of a bucket gives the bucket's equity. The newest snapshot stays out (its time is still
# running). At most %(chunk)s snapshots at a time (the LEAD is taken before the LIMIT, so the last
# of them still knows its next). Returns how many were read and the last one folded in. An agent
# deleted since has no bucket.
_FOLD_SQL = """
WITH s AS (
    SELECT id, created_at, agents, LEAD(created_at) OVER (ORDER BY created_at, id) AS next_at
    FROM portfolio_snapshots
    WHERE (created_at, id) > (%(after_at)s, %(after_id)s) AND created_at >= %(since)s AND created_at <= %(end)s
    ORDER BY created_at, id LIMIT %(chunk)s
), folded AS (
    INSERT INTO agent_equity_buckets AS b (agent_id, bucket, first_at, equity, exposed, observed)
    SELECT (a->>'agent_id')::bigint, date_bin(%(step)s, s.created_at, %(origin)s), min(s.created_at),
           (array_agg((a->>'equity')::numeric ORDER BY s.created_at, s.id))[1],
           COALESCE(SUM(s.next_at - s.created_at) FILTER (WHERE (a->>'gross_exposure')::numeric > 0), INTERVAL '0'),
           SUM(s.next_at - s.created_at)
    FROM s CROSS JOIN LATERAL jsonb_array_elements(s.agents) a
    WHERE s.next_at IS NOT NULL AND EXISTS (SELECT 1 FROM agents WHERE agents.id = (a->>'agent_id')::bigint)
    GROUP BY 1, 2
    ON CONFLICT (agent_id, bucket) DO UPDATE SET
        equity = CASE WHEN EXCLUDED.first_at < b.first_at THEN EXCLUDED.equity ELSE b.equity END,
        first_at = LEAST(b.first_at, EXCLUDED.first_at),
        exposed = b.exposed + EXCLUDED.exposed, observed = b.observed + EXCLUDED.observed
)
SELECT (SELECT count(*) FROM s), created_at, id FROM s WHERE next_at IS NOT NULL
ORDER BY created_at DESC, id DESC LIMIT 1
"""

# A bucket is in the window when its first snapshot is. Times as epoch seconds: only their order
# matters, and Django's loader for timestamptz parses text in Python (3.4 s of a 4.2 s run at
# 1,000 agents, 720,000 points).
_POINTS_SQL = """
SELECT agent_id, EXTRACT(EPOCH FROM first_at)::float8, equity FROM agent_equity_buckets
WHERE first_at >= %(start)s AND first_at <= %(end)s ORDER BY agent_id, first_at
"""

_HELD_SQL = """
SELECT agent_id, EXTRACT(EPOCH FROM SUM(exposed)), EXTRACT(EPOCH FROM SUM(observed)) FROM agent_equity_buckets
WHERE first_at >= %(start)s AND first_at <= %(end)s GROUP BY agent_id
"""

# The snapshot not folded yet (the newest): it holds until the end of the window.
_OPEN_SNAPSHOT_SQL = """
WITH s AS (
    SELECT id, created_at, agents FROM portfolio_snapshots
    WHERE (created_at, id) > (%(after_at)s, %(after_id)s) AND created_at >= %(start)s AND created_at <= %(end)s
    ORDER BY created_at DESC, id DESC LIMIT 1
)
SELECT (a->>'agent_id')::bigint, s.created_at, EXTRACT(EPOCH FROM date_bin(%(step)s, s.created_at, %(origin)s))::float8,
       a->>'equity',
       (a->>'gross_exposure')::numeric > 0
FROM s CROSS JOIN LATERAL jsonb_array_elements(s.agents) a
"""

RATIO_PLACES = Decimal("0.000001")
# The column holds 18 digits before the point; a ratio beyond this is an artefact of an almost
# flat series, not a measurement, and is stored as unknown.
RATIO_LIMIT = 1e12


def _ratio(value: float | None) -> Decimal | None:
    if value is None or not math.isfinite(value) or abs(value) >= RATIO_LIMIT:
        return None
    return Decimal(repr(value)).quantize(RATIO_PLACES)


@dataclass
class _OpenPoint:
    """An agent in the newest snapshot, whose time is still running."""

    at: datetime
    bucket: float  # epoch seconds, as the series' times
    equity: Decimal
    exposed: bool


# Snapshots folded per transaction. The first run after the upgrade, or after a long pause, has a
# whole window to fold (10,633 snapshots at the defaults: 29 s at 1,000 agents); committing as it
# goes, a run stopped at its time limit keeps what it folded and the next run goes on from there.
FOLD_CHUNK = 120


def agent_equity_buckets_fold(*, end: datetime, since: datetime, step_seconds: int) -> tuple[datetime, int] | None:
    """Fold the snapshots taken since the last fold (up to `end`, none before `since`) into
    agent_equity_buckets, under the progress row's lock (two runs at once fold each snapshot
    once). Returns the last snapshot folded in so far, (created_at, id), or None."""
    AgentEquityProgress.objects.bulk_create([AgentEquityProgress(pk=1, bucket_seconds=step_seconds)],
                                            ignore_conflicts=True)  # the row to lock, made once
    while True:
        with transaction.atomic():
            progress = AgentEquityProgress.objects.select_for_update().get(pk=1)
            if progress.bucket_seconds != step_seconds:  # rows of another width mean nothing now
                AgentEquityBucket.objects.all().delete()
                progress.bucket_seconds, progress.folded_at, progress.folded_id = step_seconds, None, None
            with connection.cursor() as cursor:
                cursor.execute(_FOLD_SQL, {"after_at": progress.folded_at or _BEFORE_ALL,
                                           "after_id": progress.folded_id or 0, "since": since, "end": end,
                                           "step": timedelta(seconds=step_seconds), "origin": _BEFORE_ALL,
                                           "chunk": FOLD_CHUNK})
                read, *last = cursor.fetchone() or (0, None, None)
            if read:
                progress.folded_at, progress.folded_id = last
            progress.save()
        if read < FOLD_CHUNK:
            break
    # Buckets a window can no longer reach go: the table stays one window deep.
    AgentEquityBucket.objects.filter(bucket__lt=since - timedelta(seconds=step_seconds)).delete()
    return (progress.folded_at, progress.folded_id) if progress.folded_at else None


EquitySeries = dict[int, list[tuple[float, Decimal]]]  # (epoch seconds, equity)
HeldSeconds = dict[int, tuple[float, float]]


def agent_equity_series(*, start: datetime, end: datetime, folded: tuple[datetime, int] | None,
                        step_seconds: int) -> tuple[EquitySeries, HeldSeconds]:
    """({agent id: [(epoch seconds, equity)]}, {agent id: (seconds with an open position, seconds observed)})
    over the window: one point per `step_seconds` bucket (its first snapshot), and the time each
    snapshot held. Folded buckets, plus the newest snapshot, which holds until `end`."""
    series: EquitySeries = defaultdict(list)
    window = {"start": start, "end": end}
    after_at, after_id = folded or (_BEFORE_ALL, 0)
    with connection.cursor() as cursor:
        cursor.execute(_POINTS_SQL, window)
        for agent_id, at, equity in cursor.fetchall():
            series[agent_id].append((at, equity))
        cursor.execute(_HELD_SQL, window)
        held = {agent_id: (float(exposed), float(observed)) for agent_id, exposed, observed in cursor.fetchall()}
        cursor.execute(_OPEN_SNAPSHOT_SQL, {**window, "after_at": after_at, "after_id": after_id,
                                            "step": timedelta(seconds=step_seconds), "origin": _BEFORE_ALL})
        open_points = {row[0]: _OpenPoint(row[1], row[2], Decimal(row[3]), row[4]) for row in cursor.fetchall()}
    for agent_id, point in open_points.items():
        points = series[agent_id]
        if not points or points[-1][0] < point.bucket:  # the first snapshot of its bucket
            points.append((point.at.timestamp(), point.equity))
        seconds = (end - point.at).total_seconds()
        exposed, observed = held.get(agent_id, (0.0, 0.0))
        held[agent_id] = (exposed + (seconds if point.exposed else 0.0), observed + seconds)
    return series, held


def agent_trade_pnls(*, start: datetime, end: datetime) -> dict[int, list[Decimal]]:
    """{agent id: [realized PnL of each closed trade]}, oldest first. A trade is an order whose
    fills in the window realized PnL (an order that only opened a position realizes nothing: its
    fee sits in the cost basis); its PnL is the sum over its fills, fees included."""
    pnls: dict[int, list[Decimal]] = defaultdict(list)
    rows = (Fill.objects.filter(executed_at__gte=start, executed_at__lte=end).exclude(realized_pnl=0)
            .order_by().values("order_id", "agent_id")
            .annotate(pnl=Sum("realized_pnl")).order_by("order_id"))
    for row in rows:
        pnls[row["agent_id"]].append(row["pnl"])
    return pnls


def agent_performance_update(*, now: datetime | None = None) -> int:
    """Recompute every agent's `agent_performance` row over [now - window, now]. Idempotent:
    the same data gives the same row. Returns the number of agents written."""
    now = now or timezone.now()
    start = now - timedelta(days=settings.AGENT_PERFORMANCE_WINDOW_DAYS)
    step = settings.AGENT_PERFORMANCE_RETURN_SECONDS
    folded = agent_equity_buckets_fold(end=now, since=start, step_seconds=step)
    equity, held = agent_equity_series(start=start, end=now, folded=folded, step_seconds=step)
    rows = agent_performance_rows(start=start, end=now, step_seconds=step, equity=equity, held=held)
    # One upsert for all agents: the row per agent is replaced, never duplicated.
    AgentPerformance.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["agent"],
        update_fields=["window_start", "window_end", "trades", "win_rate", "sharpe_ratio", "sortino_ratio",
                       "max_drawdown", "profit_factor", "total_pnl", "exposure_time", "equity_points", "updated_at"],
    )
    return len(rows)


def agent_performance_rows(*, start: datetime, end: datetime, step_seconds: int, equity: EquitySeries,
                           held: HeldSeconds) -> list[AgentPerformance]:
    """Every agent's row (unsaved) from its equity series and time held, and its trades in the window."""
    trades = agent_trade_pnls(start=start, end=end)
    rows = []
    for agent_id in Agent.objects.order_by("id").values_list("id", flat=True):
        exposed, observed = held.get(agent_id, (None, None))
        figures = performance_figures(
            equity.get(agent_id, []), trades.get(agent_id, []), periods_per_year=periods_per_year_for(step_seconds),
            risk_free_rate=settings.PERFORMANCE_RISK_FREE_RATE, exposure_seconds=exposed, window_seconds=observed,
        )
        rows.append(_performance_row(agent_id, figures, start=start, end=end, points=len(equity.get(agent_id, []))))
    return rows


def _performance_row(agent_id: int, figures: PerformanceFigures, *, start: datetime, end: datetime,
                     points: int) -> AgentPerformance:
    return AgentPerformance(
        agent_id=agent_id, window_start=start, window_end=end, trades=figures.trades, win_rate=figures.win_rate,
        sharpe_ratio=_ratio(figures.sharpe_ratio), sortino_ratio=_ratio(figures.sortino_ratio),
        max_drawdown=figures.max_drawdown, profit_factor=figures.profit_factor, total_pnl=figures.total_pnl,
        exposure_time=_ratio(figures.exposure_time), equity_points=points, updated_at=end,
    )
