"""Agent performance (issue 8, part 2): real fills through the order path, snapshots, then the
task; the `agent_performance` row against an independent computation and the runbook's query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import empyrical
import numpy as np
import pytest
from django.test import override_settings
from django.utils import timezone

from tests.factories import make_agent
from tests.integration.test_snapshots import psql_rows, runbook_query
from trading.analytics import HOURS_PER_YEAR
from trading.models import Agent, AgentEquityBucket, AgentEquityProgress, AgentPerformance, Order, PortfolioSnapshot
from trading.services import performance
from trading.services.orders import order_create, order_execute
from trading.services.performance import agent_performance_update
from trading.services.snapshots import portfolio_snapshot_take, portfolio_snapshots_thin
from trading.tasks import update_agent_performance

D = Decimal


def _trade(agent, side: str, quantity: str = "1") -> Order:
    order = order_create(agent=agent, symbol="BTC/USDT", side=side, quantity=D(quantity), enqueue=False)
    return order_execute(order_id=order.pk)


def _equity_of(agent_id: int) -> list[Decimal]:
    return [D(next(a["equity"] for a in s.agents if a["agent_id"] == agent_id))
            for s in PortfolioSnapshot.objects.order_by("created_at")]


@pytest.mark.django_db(transaction=True)
def test_performance_when_fills_and_snapshots_then_figures_in_table_and_runbook_query(fixed_price_feed, worker_env):
    trader = make_agent(name="trader", capital=D("10000"))
    idle = make_agent(name="idle", symbols=["ETH/USDT"], capital=D("5000"))
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    at = [hour + timedelta(hours=h) for h in range(5)]  # snapshots on five whole hours

    fixed_price_feed.price = D("100")
    portfolio_snapshot_take(now=at[0])                      # flat
    _trade(trader, "buy")
    fixed_price_feed.price = D("120")
    portfolio_snapshot_take(now=at[1])                      # long, marked at 120
    win = _trade(trader, "sell")                            # bought ~100, sold ~120: a win
    fixed_price_feed.price = D("110")
    portfolio_snapshot_take(now=at[2])                      # flat again
    _trade(trader, "buy")
    fixed_price_feed.price = D("95")
    portfolio_snapshot_take(now=at[3])                      # long, marked at 95
    loss = _trade(trader, "sell")                           # bought ~110, sold ~95: a loss
    portfolio_snapshot_take(now=at[4])
    now = at[4] + timedelta(minutes=30)

    assert agent_performance_update(now=now) == 2
    row = AgentPerformance.objects.get(agent=trader)

    # Independent: trades from the orders' own PnL; returns by numpy; ratios by empyrical.
    assert win.pnl > 0 > loss.pnl
    assert row.trades == 2
    assert row.total_pnl == win.pnl + loss.pnl
    assert row.win_rate == D("0.5")
    assert row.profit_factor == pytest.approx(win.pnl / -loss.pnl, abs=D("1e-9"))
    equity = np.array([float(e) for e in _equity_of(trader.pk)])
    returns = equity[1:] / equity[:-1] - 1
    assert row.equity_points == 5
    assert float(row.sharpe_ratio) == pytest.approx(empyrical.sharpe_ratio(returns, annualization=HOURS_PER_YEAR),
                                                    abs=1e-6)
    assert float(row.sortino_ratio) == pytest.approx(
        empyrical.sortino_ratio(returns, annualization=HOURS_PER_YEAR), abs=1e-6)
    assert float(row.max_drawdown) == pytest.approx(-empyrical.max_drawdown(returns), abs=1e-9)
    # Long at the snapshots of hour 1 and hour 3, each held one hour; observed 4 h 30 min.
    assert row.exposure_time == (D(2 * 3600) / D(4 * 3600 + 1800)).quantize(D("0.000001"))
    assert (row.window_end, row.window_start) == (now, now - timedelta(days=30))

    idle_row = AgentPerformance.objects.get(agent=idle)
    assert (idle_row.trades, idle_row.win_rate, idle_row.sharpe_ratio, idle_row.total_pnl) == (0, None, None, 0)
    assert (idle_row.max_drawdown, idle_row.exposure_time) == (0, 0)  # flat equity, never exposed

    # The runbook's query, verbatim. PostgreSQL sorts NULL first in DESC: the idle agent leads.
    rows = psql_rows(runbook_query("Agent Performance"), worker_env)
    assert [r["agent_id"] for r in rows] == [str(idle.pk), str(trader.pk)]
    assert (rows[0]["win_rate"], rows[0]["sharpe_ratio"]) == ("", "")
    assert D(rows[1]["win_rate"]) == D("0.5") and D(rows[1]["sharpe_ratio"]) == row.sharpe_ratio
    assert D(rows[1]["total_pnl"]) == win.pnl + loss.pnl

    # Idempotent: the same data gives the same row; still one row per agent.
    agent_performance_update(now=now)
    again = AgentPerformance.objects.get(agent=trader)
    assert (again.sharpe_ratio, again.trades, again.total_pnl, again.exposure_time) == (
        row.sharpe_ratio, row.trades, row.total_pnl, row.exposure_time)
    assert AgentPerformance.objects.count() == 2


@pytest.mark.django_db
@override_settings(AGENT_PERFORMANCE_RETURN_SECONDS=3600, SNAPSHOT_KEEP_ALL_DAYS=7)
def test_performance_when_old_snapshots_thinned_then_ratios_unchanged(fixed_price_feed):
    """Returns come from the first snapshot of each hour, the row thinning keeps: thinning the
    minute rows of last month changes no ratio."""
    agent = make_agent(name="steady")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(days=9)
    prices = [D("100") + D(i % 7) - D(i % 5) for i in range(6 * 60)]  # a jagged path, one price a minute
    _trade(agent, "buy")
    for minute, price in enumerate(prices):
        fixed_price_feed.price = price
        portfolio_snapshot_take(now=start + timedelta(minutes=minute))
    agent_performance_update(now=now)
    before = AgentPerformance.objects.get(agent=agent)
    assert portfolio_snapshots_thin(now=now) > 0
    agent_performance_update(now=now)
    after = AgentPerformance.objects.get(agent=agent)
    assert before.equity_points == after.equity_points >= 6
    assert before.sharpe_ratio is not None
    assert (after.sharpe_ratio, after.sortino_ratio, after.max_drawdown) == (
        before.sharpe_ratio, before.sortino_ratio, before.max_drawdown)


@pytest.mark.django_db
def test_performance_task_when_no_snapshots_then_rows_with_unknown_ratios(fixed_price_feed):
    agent = make_agent()
    update_agent_performance()
    row = AgentPerformance.objects.get(agent=agent)
    assert (row.trades, row.sharpe_ratio, row.sortino_ratio, row.max_drawdown, row.exposure_time,
            row.equity_points) == (0, None, None, None, None, 0)


@pytest.mark.django_db
def test_api_and_admin_when_figures_computed_then_new_fields_shown(admin_client, fixed_price_feed):
    agent = make_agent(name="shown")
    hour = datetime(2026, 11, 1, tzinfo=UTC)
    for h, price in enumerate(["100", "100", "100", "100"]):
        fixed_price_feed.price = D(price)
        portfolio_snapshot_take(now=hour + timedelta(hours=h))
    agent_performance_update(now=hour + timedelta(hours=4))
    performance = admin_client.get("/api/agent-performance/").json()["results"]
    assert {k: performance[0][k] for k in ("agent", "trades", "sortino_ratio", "profit_factor", "equity_points")} == {
        "agent": agent.pk, "trades": 0, "sortino_ratio": None, "profit_factor": None, "equity_points": 4}
    assert D(performance[0]["max_drawdown"]) == 0 and D(performance[0]["exposure_time"]) == 0
    newest = admin_client.get("/api/portfolio-snapshots/").json()["results"][0]
    snapshot = admin_client.get(f"/api/portfolio-snapshots/{newest['id']}/").json()
    assert [a["agent"] for a in snapshot["agents"]] == ["shown"] and D(snapshot["agents"][0]["equity"]) == 10000
    listing = admin_client.get("/admin/trading/agentperformance/").content.decode()
    assert "Sortino ratio" in listing and "Exposure time" in listing and "shown" in listing
    page = admin_client.get(f"/admin/trading/agent/{agent.pk}/change/").content.decode()
    assert "Sortino —" in page and "max drawdown 0.0%" in page


@pytest.mark.django_db
def test_performance_update_when_more_agents_then_same_number_of_queries(fixed_price_feed):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    start = datetime(2026, 11, 1, tzinfo=UTC)

    def queries_for_update(hours_from: int) -> int:
        for h in range(hours_from, hours_from + 3):
            portfolio_snapshot_take(now=start + timedelta(hours=h))
        with CaptureQueriesContext(connection) as queries:
            agent_performance_update(now=start + timedelta(hours=hours_from + 3))
        return len(queries)

    make_agent(name="first")
    one = queries_for_update(0)
    for i in range(20):
        make_agent(name=f"more-{i}")
    assert queries_for_update(3) == one
    assert AgentPerformance.objects.filter(equity_points__gte=3).count() == 21


def _forget_folds() -> None:
    """As before the first run: the next run folds every snapshot still kept."""
    AgentEquityBucket.objects.all().delete()
    AgentEquityProgress.objects.all().delete()


def _figures(agent) -> tuple:
    row = AgentPerformance.objects.get(agent=agent)
    return (row.equity_points, row.sharpe_ratio, row.sortino_ratio, row.max_drawdown, row.exposure_time)


def _jagged_book(fixed_price_feed, agent, start: datetime, minutes: int, every: int = 7) -> list[datetime]:
    """A snapshot a minute with a jagged price, flat every `every` minutes (exposure comes and goes)."""
    times = []
    for minute in range(minutes):
        if minute % every == 0:
            _trade(agent, "buy")
        if minute % every == every - 1:
            _trade(agent, "sell")
        fixed_price_feed.price = D("100") + D(minute % 7) - D(minute % 5)
        times.append(start + timedelta(minutes=minute))
        portfolio_snapshot_take(now=times[-1])
    return times


@pytest.mark.django_db
def test_performance_when_run_as_snapshots_come_then_same_figures_as_one_run_over_all(fixed_price_feed, monkeypatch):
    """Each run folds only the snapshots since the last one; folding in many small steps (a bucket
    split across runs, its time added up) gives the figures of one run over everything."""
    agent = make_agent(name="folded")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    times = _jagged_book(fixed_price_feed, agent, start, 0)
    for step in range(0, 4 * 60, 25):  # runs every 25 minutes, each folding what came since
        times += _jagged_book(fixed_price_feed, agent, start + timedelta(minutes=step), 25)
        agent_performance_update(now=times[-1] + timedelta(seconds=30))
    now = times[-1] + timedelta(seconds=30)
    agent_performance_update(now=now)
    stepwise = _figures(agent)

    _forget_folds()
    agent_performance_update(now=now)  # everything folded in one run
    assert _figures(agent) == stepwise
    _forget_folds()
    monkeypatch.setattr(performance, "FOLD_CHUNK", 7)  # in many transactions, 7 snapshots each
    agent_performance_update(now=now)
    assert _figures(agent) == stepwise
    assert stepwise[0] == 5 and stepwise[1] is not None  # 4 h 10 min of minutes: 5 clock hours
    assert D("0") < stepwise[4] < D("1")
    # The exposure is the minute snapshots' own: exposed minutes / minutes observed.
    snapshots = list(PortfolioSnapshot.objects.order_by("created_at"))
    held = [((b.created_at if b else now) - a.created_at).total_seconds()
            for a, b in zip(snapshots, snapshots[1:] + [None], strict=True)]
    exposed = sum(s for s, snap in zip(held, snapshots, strict=True)
                  if D(next(a["gross_exposure"] for a in snap.agents if a["agent_id"] == agent.pk)) > 0)
    assert stepwise[4] == (D(exposed) / D(sum(held))).quantize(D("0.000001"))


@pytest.mark.django_db
def test_performance_when_folded_snapshots_change_then_not_read_again(fixed_price_feed):
    """A run reads the snapshots since the last run, not the whole window: emptying the agents
    of every snapshot already folded changes nothing."""
    agent = make_agent(name="read-once")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    times = _jagged_book(fixed_price_feed, agent, start, 150)
    now = times[-1] + timedelta(seconds=30)
    agent_performance_update(now=now)
    before = _figures(agent)
    progress = AgentEquityProgress.objects.get()
    assert progress.folded_at == times[-2]  # the newest snapshot's time is still running
    assert PortfolioSnapshot.objects.filter(created_at__lte=progress.folded_at).update(agents=[]) == 149
    agent_performance_update(now=now)
    assert _figures(agent) == before and before[0] == 3


@pytest.mark.django_db
def test_performance_when_agent_deleted_or_bucket_width_changed_then_folded_afresh(fixed_price_feed):
    gone, kept = make_agent(name="gone"), make_agent(name="kept", symbols=["ETH/USDT"])
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    for minute in range(0, 150, 10):
        portfolio_snapshot_take(now=start + timedelta(minutes=minute))
    now = start + timedelta(minutes=150)
    Agent.objects.filter(pk=gone.pk).delete()  # still in every snapshot's agents
    assert agent_performance_update(now=now) == 1
    assert set(AgentEquityBucket.objects.values_list("agent_id", flat=True)) == {kept.pk}
    assert AgentEquityBucket.objects.count() == 3 and _figures(kept)[0] == 3
    with override_settings(AGENT_PERFORMANCE_RETURN_SECONDS=1800):
        agent_performance_update(now=now)
    assert AgentEquityBucket.objects.count() == 5 and _figures(kept)[0] == 5  # half hours, from all snapshots
    assert AgentEquityProgress.objects.get().bucket_seconds == 1800


@pytest.mark.django_db(transaction=True)
def test_fold_when_two_runs_at_once_then_each_snapshot_folded_once(fixed_price_feed):
    """Two workers running the task at once: the progress row's lock lets one fold, the other
    finds nothing left. The time observed is the time between the first and last snapshot."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from django.db import connection

    from trading.services.performance import agent_equity_buckets_fold

    make_agent(name="twice")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    for minute in range(100):
        portfolio_snapshot_take(now=start + timedelta(minutes=minute))
    both = Barrier(2)

    def fold() -> tuple:
        try:
            both.wait(timeout=10)
            return agent_equity_buckets_fold(end=start + timedelta(hours=2), since=start, step_seconds=3600)
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: fold(), range(2)))
    assert results[0] == results[1] and results[0][0] == start + timedelta(minutes=98)
    observed = sum((b.observed for b in AgentEquityBucket.objects.all()), timedelta())
    assert observed == timedelta(minutes=99)


@pytest.mark.django_db
def test_fold_when_stopped_midway_then_next_run_goes_on_from_what_was_kept(fixed_price_feed, monkeypatch):
    """A first run with a whole window to fold commits as it goes: stopped at its time limit (here:
    an error in its third transaction), it keeps the first two, and the next run finishes."""
    from celery.exceptions import SoftTimeLimitExceeded

    agent = make_agent(name="stopped")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    times = _jagged_book(fixed_price_feed, agent, start, 100)
    now = times[-1] + timedelta(seconds=30)
    monkeypatch.setattr(performance, "FOLD_CHUNK", 10)
    saves = 0
    real_save = AgentEquityProgress.save

    def save_until_the_limit(self, *args, **kwargs):
        nonlocal saves
        saves += 1
        if saves == 3:
            raise SoftTimeLimitExceeded()
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(AgentEquityProgress, "save", save_until_the_limit)
    with pytest.raises(SoftTimeLimitExceeded):
        agent_performance_update(now=now)
    assert AgentEquityProgress.objects.get().folded_at == times[19]  # two transactions of ten
    agent_performance_update(now=now)
    assert AgentEquityProgress.objects.get().folded_at == times[-2]
    resumed = _figures(agent)
    _forget_folds()
    agent_performance_update(now=now)
    assert _figures(agent) == resumed and resumed[0] == 2
