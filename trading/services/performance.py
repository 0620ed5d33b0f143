"""Agent performance over a rolling window (beat every AGENT_PERFORMANCE_SECONDS).

The figures are `trading.analytics.performance_figures` (pure, shared with the backtester);
this module only gathers their inputs, in a constant number of queries for all agents:

- equity series: each agent's `equity` from the `agents` JSON of `portfolio_snapshots`, one
  point per AGENT_PERFORMANCE_RETURN_SECONDS bucket (the first snapshot of the bucket: the
  same row thinning keeps, so the figures do not change when old rows are thinned);
- trades: orders whose fills in the window realized PnL (fees included), one PnL per order;
- exposure: time-weighted over all snapshots in the window (each snapshot holds until the next).

Definitions and edge cases: docs/metrics.md, "Agent performance figures".
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from trading.analytics import PerformanceFigures, performance_figures, periods_per_year_for
from trading.models import Agent, AgentPerformance, Fill

logger = logging.getLogger(__name__)

# Buckets aligned to the Unix epoch (hourly buckets are clock hours), as in snapshot thinning.
_EQUITY_SQL = """
WITH points AS (
    SELECT DISTINCT ON (date_bin(%(step)s, created_at, TIMESTAMPTZ '1970-01-01 00:00:00+00')) created_at, agents
    FROM portfolio_snapshots
    WHERE created_at >= %(start)s AND created_at <= %(end)s
    ORDER BY date_bin(%(step)s, created_at, TIMESTAMPTZ '1970-01-01 00:00:00+00'), created_at, id
)
SELECT (a->>'agent_id')::bigint, p.created_at, a->>'equity'
FROM points p CROSS JOIN LATERAL jsonb_array_elements(p.agents) a
ORDER BY 1, 2
"""

# Seconds each agent was observed and exposed: a snapshot holds until the next one (the last
# until the end of the window).
_EXPOSURE_SQL = """
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

RATIO_PLACES = Decimal("0.000001")
# The column holds 18 digits before the point; a ratio beyond this is an artefact of an almost
# flat series, not a measurement, and is stored as unknown.
RATIO_LIMIT = 1e12


def _ratio(value: float | None) -> Decimal | None:
    if value is None or not math.isfinite(value) or abs(value) >= RATIO_LIMIT:
        return None
    return Decimal(repr(value)).quantize(RATIO_PLACES)


def agent_equity_series(*, start: datetime, end: datetime,
                        step_seconds: int) -> dict[int, list[tuple[datetime, Decimal]]]:
    """{agent id: [(time, equity)]}, one point per `step_seconds` bucket (its first snapshot)."""
    series: dict[int, list[tuple[datetime, Decimal]]] = defaultdict(list)
    with connection.cursor() as cursor:
        cursor.execute(_EQUITY_SQL, {"start": start, "end": end, "step": timedelta(seconds=step_seconds)})
        for agent_id, at, equity in cursor.fetchall():
            series[agent_id].append((at, Decimal(equity)))
    return series


def agent_exposure_seconds(*, start: datetime, end: datetime) -> dict[int, tuple[float, float]]:
    """{agent id: (seconds with an open position, seconds observed)} over the window."""
    with connection.cursor() as cursor:
        cursor.execute(_EXPOSURE_SQL, {"start": start, "end": end})
        return {agent_id: (float(exposed), float(observed)) for agent_id, exposed, observed in cursor.fetchall()}


def agent_trade_pnls(*, start: datetime, end: datetime) -> dict[int, list[Decimal]]:
    """{agent id: [realized PnL of each closed trade]}, oldest first. A trade is an order whose
    fills in the window realized PnL (an order that only opened a position realizes nothing: its
    fee sits in the cost basis); its PnL is the sum over its fills, fees included."""
    pnls: dict[int, list[Decimal]] = defaultdict(list)
    rows = (Fill.objects.filter(executed_at__gte=start, executed_at__lte=end).exclude(realized_pnl=0)
            .order_by().values("order_id", "order__agent_id")
            .annotate(pnl=Sum("realized_pnl")).order_by("order_id"))
    for row in rows:
        pnls[row["order__agent_id"]].append(row["pnl"])
    return pnls


def agent_performance_update(*, now: datetime | None = None) -> int:
    """Recompute every agent's `agent_performance` row over [now - window, now]. Idempotent:
    the same data gives the same row. Returns the number of agents written."""
    now = now or timezone.now()
    start = now - timedelta(days=settings.AGENT_PERFORMANCE_WINDOW_DAYS)
    step = settings.AGENT_PERFORMANCE_RETURN_SECONDS
    equity = agent_equity_series(start=start, end=now, step_seconds=step)
    exposure = agent_exposure_seconds(start=start, end=now)
    trades = agent_trade_pnls(start=start, end=now)
    rows = []
    for agent_id in Agent.objects.order_by("id").values_list("id", flat=True):
        exposed, observed = exposure.get(agent_id, (None, None))
        figures = performance_figures(
            equity.get(agent_id, []), trades.get(agent_id, []), periods_per_year=periods_per_year_for(step),
            risk_free_rate=settings.PERFORMANCE_RISK_FREE_RATE, exposure_seconds=exposed, window_seconds=observed,
        )
        rows.append(_performance_row(agent_id, figures, start=start, end=now, points=len(equity.get(agent_id, []))))
    # One upsert for all agents: the row per agent is replaced, never duplicated.
    AgentPerformance.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["agent"],
        update_fields=["window_start", "window_end", "trades", "win_rate", "sharpe_ratio", "sortino_ratio",
                       "max_drawdown", "profit_factor", "total_pnl", "exposure_time", "equity_points", "updated_at"],
    )
    return len(rows)


def _performance_row(agent_id: int, figures: PerformanceFigures, *, start: datetime, end: datetime,
                     points: int) -> AgentPerformance:
    return AgentPerformance(
        agent_id=agent_id, window_start=start, window_end=end, trades=figures.trades, win_rate=figures.win_rate,
        sharpe_ratio=_ratio(figures.sharpe_ratio), sortino_ratio=_ratio(figures.sortino_ratio),
        max_drawdown=figures.max_drawdown, profit_factor=figures.profit_factor, total_pnl=figures.total_pnl,
        exposure_time=_ratio(figures.exposure_time), equity_points=points, updated_at=end,
    )
