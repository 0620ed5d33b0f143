"""Agent performance from closed trades (fills that realized PnL) over a rolling window.

A first, simple set of figures; the risk-analytics work replaces it with the full set
(Sharpe from the equity series, Sortino, drawdown, profit factor) and documents them.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from tinywindow.fields import ZERO
from trading.models import Agent, AgentPerformance, Fill

WINDOW = timedelta(days=30)


def agent_performance_update(*, now: datetime | None = None) -> int:
    now = now or timezone.now()
    start = now - WINDOW
    updated = 0
    for agent in Agent.objects.all():
        pnls = [
            f.realized_pnl
            for f in Fill.objects.filter(order__agent=agent, executed_at__gte=start, side="sell").only("realized_pnl")
        ]
        trades = len(pnls)
        win_rate = Decimal(sum(1 for p in pnls if p > 0)) / trades if trades else None
        sharpe = None
        if trades >= 2:
            mean = sum(pnls, ZERO) / trades
            variance = sum(((p - mean) ** 2 for p in pnls), ZERO) / (trades - 1)
            if variance > 0:
                # Per-trade Sharpe (not annualised) until the analytics work defines the series.
                sharpe = Decimal(str(round(float(mean) / math.sqrt(float(variance)), 6)))
        AgentPerformance.objects.update_or_create(
            agent=agent,
            defaults={"window_start": start, "window_end": now, "trades": trades, "win_rate": win_rate,
                      "sharpe_ratio": sharpe, "total_pnl": sum(pnls, ZERO)},
        )
        updated += 1
    return updated
