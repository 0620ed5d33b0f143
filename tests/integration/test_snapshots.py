"""Risk snapshots (issue 8, part 1): a complete `portfolio_snapshots` row that the runbook's
"Position Summary" SQL shows, at a constant number of queries for any book size, thinned
idempotently, on a beat schedule the operator can change in the admin."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Max
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tests.factories import make_agent
from tests.helpers import ROOT, manage
from tinywindow.bootstrap import bootstrap
from trading.feeds.base import Candle
from trading.models import Agent, Order, PortfolioSnapshot, Position
from trading.services.market_data import candles_store
from trading.services.orders import order_create, order_execute
from trading.services.snapshots import portfolio_snapshot_take, portfolio_snapshots_thin
from trading.tasks import take_portfolio_snapshot, thin_portfolio_snapshots

D = Decimal
RUNBOOK_CANDIDATES = (ROOT.parent / "shared" / "runbook.md", ROOT / "docs" / "runbook.md")


def runbook_query(heading: str) -> str:
    """The SQL block under `### <heading>` in the runbook, verbatim."""
    text = next(p for p in RUNBOOK_CANDIDATES if p.exists()).read_text()
    match = re.search(rf"^### {re.escape(heading)}\n```sql\n(.*?)```", text, re.S | re.M)
    assert match, f"runbook has no SQL under {heading!r}"
    return match.group(1).strip()


def psql_rows(sql: str, env: dict[str, str]) -> list[dict[str, str]]:
    """Run `sql` through `manage.py dbshell` (psql) as the operator would, rows as dicts."""
    result = manage("dbshell", "--", "-v", "ON_ERROR_STOP=1", "--csv", "-c", sql, env=env)
    assert result.returncode == 0, f"{sql}\n{result.stderr}"
    return list(csv.DictReader(io.StringIO(result.stdout)))


# --- what a snapshot holds ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_position_summary_when_run_verbatim_then_answers_equity_exposure_positions_and_drawdown(
        fixed_price_feed, worker_env):
    btc = make_agent(name="btc-bot", capital=D("10000"))
    eth = make_agent(name="eth-bot", symbols=["ETH/USDT"], capital=D("5000"))
    fixed_price_feed.price = D("100")
    order_execute(order_id=order_create(agent=btc, symbol="BTC/USDT", side="buy", quantity=D("2"), enqueue=False).pk)
    order_execute(order_id=order_create(agent=eth, symbol="ETH/USDT", side="buy", quantity=D("10"), enqueue=False).pk)
    order_execute(order_id=order_create(agent=eth, symbol="ETH/USDT", side="sell", quantity=D("4"), enqueue=False).pk)
    order_create(agent=btc, symbol="BTC/USDT", side="buy", quantity=D("1"), enqueue=False)  # stays pending
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

    fixed_price_feed.price = D("120")
    first = portfolio_snapshot_take(now=t0)
    fixed_price_feed.price = D("90")
    portfolio_snapshot_take(now=t0 + timedelta(minutes=1))

    rows = psql_rows(runbook_query("Position Summary"), worker_env)
    assert len(rows) == 1
    row = rows[0]
    btc_pos, eth_pos = Position.objects.get(agent=btc), Position.objects.get(agent=eth)
    unrealized = {p.agent_id: (D("90") - p.average_price) * p.quantity for p in (btc_pos, eth_pos)}
    realized = btc_pos.realized_pnl + eth_pos.realized_pnl
    equity = D("15000") + realized + sum(unrealized.values())
    assert datetime.fromisoformat(row["created_at"]) == t0 + timedelta(minutes=1)
    assert D(row["equity"]) == equity.quantize(D("0.00000001"))
    assert D(row["realized_pnl"]) == realized.quantize(D("0.00000001")) and realized < 0  # fees and a lower sell
    assert D(row["gross_exposure"]) == D(row["net_exposure"]) == (D("2") + D("6")) * D("90")
    assert D(row["cash"]) == (D("15000") + realized - btc_pos.quantity * btc_pos.average_price
                              - eth_pos.quantity * eth_pos.average_price).quantize(D("0.00000001"))
    assert int(row["open_orders"]) == 1
    # Drawdown from the peak (the first snapshot, at 120): (peak - equity) / peak.
    assert D(row["peak_equity"]) == first.equity > D(row["equity"])
    assert abs(D(row["drawdown"]) - (first.equity - D(row["equity"])) / first.equity) <= D("2e-8")

    positions = {(p["agent"], p["symbol"]): p for p in json.loads(row["positions"])}
    assert set(positions) == {("btc-bot", "BTC/USDT"), ("eth-bot", "ETH/USDT")}
    eth_row = positions[("eth-bot", "ETH/USDT")]
    assert (D(eth_row["quantity"]), D(eth_row["mark_price"])) == (D("6"), D("90"))
    assert D(eth_row["average_price"]) == eth_pos.average_price.quantize(D("0.00000001"))
    assert D(eth_row["unrealized_pnl"]) == unrealized[eth.pk].quantize(D("0.00000001"))
    agents = {a["agent"]: a for a in json.loads(row["agents"])}
    assert D(agents["btc-bot"]["equity"]) == (D("10000") + btc_pos.realized_pnl + unrealized[btc.pk]).quantize(
        D("0.00000001"))
    assert (agents["btc-bot"]["open_orders"], agents["eth-bot"]["open_orders"]) == (1, 0)
    assert abs(sum(D(a["equity"]) for a in agents.values()) - D(row["equity"])) <= D("2e-8")  # each rounded


@pytest.mark.django_db
def test_snapshot_task_when_run_then_writes_one_row_stamped_now(fixed_price_feed):
    make_agent()
    before = datetime.now(UTC)
    take_portfolio_snapshot()
    snapshot = PortfolioSnapshot.objects.get()
    assert before <= snapshot.created_at <= datetime.now(UTC)
    assert snapshot.equity == D("10000") and snapshot.positions == [] and len(snapshot.agents) == 1


# --- cost: constant queries whatever the size of the book ------------------------------------------


def _store_candles(symbols: list[str], end: datetime) -> None:
    for i, symbol in enumerate(symbols):
        candles = [Candle(end - timedelta(minutes=5 - k), *(D(100 + i + k),) * 4, D("1")) for k in range(5)]
        candles_store(exchange="binance", symbol=symbol, timeframe="1m", candles=candles)


def _book(agents: int, symbols: list[str], feed: str, start: int) -> None:
    """`agents` agents with a position in each of `symbols` and one open order each. Rows are
    written directly (agent_create costs a schedule and a venue lookup each; the paper venue lists
    only 8 markets): what is tested is the snapshot's query count, not how the rows came about."""
    label = feed.replace(":", "-")  # agent names take no colon
    template = make_agent(name=f"{label}-template-{start}", feed=feed)
    made = [template] + Agent.objects.bulk_create([
        Agent(name=f"{label}-{start + i}", strategy=template.strategy, params=template.params,
              symbols=template.symbols, feed=feed, capital=template.capital) for i in range(agents - 1)])
    Position.objects.bulk_create([Position(agent=a, symbol=s, quantity=D("1.5"), average_price=D("100"),
                                           realized_pnl=D("1")) for a in made for s in symbols])
    Order.objects.bulk_create([Order(client_order_id=f"open-{label}-{a.pk}", agent=a, exchange="paper", mode="paper",
                                     symbol="BTC/USDT", side="buy", quantity=D("0.1")) for a in made])


def _snapshot_queries(now: datetime) -> tuple[int, PortfolioSnapshot]:
    with CaptureQueriesContext(connection) as queries:
        snapshot = portfolio_snapshot_take(now=now)
    return len(queries), snapshot


@pytest.mark.parametrize("feed", ["replay:binance", "replay", "synthetic"])
@pytest.mark.django_db
def test_snapshot_when_100_agents_by_10_symbols_then_same_queries_as_1_by_1(feed):
    symbols = [f"C{i}/USDT" for i in range(10)]
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    _store_candles(symbols, now.replace(second=0))
    _book(1, symbols[:1], feed, 0)
    small, _ = _snapshot_queries(now)
    _book(99, symbols, feed, 1)
    large, snapshot = _snapshot_queries(now + timedelta(seconds=1))
    assert Position.objects.count() == 1 + 99 * 10
    assert len(snapshot.positions) == 991 and len(snapshot.agents) == 100 and snapshot.open_orders == 100
    assert large == small, f"{small} queries for 1 agent x 1 symbol, {large} for 100 x 10"
    if feed != "synthetic":
        # The mark is the close of the newest CLOSED 1m candle: C3's candles close at 103..107.
        marks = {p["symbol"]: D(p["mark_price"]) for p in snapshot.positions}
        assert marks["C3/USDT"] == D("107") and marks["C0/USDT"] == D("104")


# --- thinning -------------------------------------------------------------------------------------


def _rows(start: datetime, minutes: int, equity_from: int = 10000, peak: int = 0) -> list[PortfolioSnapshot]:
    """Rows as the snapshot task writes them: each carries the running peak."""
    return [PortfolioSnapshot(created_at=start + timedelta(minutes=m), equity=D(equity_from + m), cash=D(0),
                              gross_exposure=D(0), net_exposure=D(0), realized_pnl=D(0), unrealized_pnl=D(0),
                              peak_equity=D(max(peak, equity_from + m)), drawdown=D(0)) for m in range(minutes)]


@pytest.mark.django_db
def test_thin_when_rows_older_than_a_week_then_first_of_each_hour_kept_and_idempotent():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    old_start = now - timedelta(days=10, minutes=30)  # 10 days ago, 11:30 -> 14:29: buckets 11, 12, 13, 14
    recent_start = now - timedelta(days=6)
    PortfolioSnapshot.objects.bulk_create(_rows(old_start, 180) + _rows(recent_start, 90, equity_from=9000, peak=10179))
    peak = PortfolioSnapshot.objects.aggregate(p=Max("peak_equity"))["p"]

    deleted = portfolio_snapshots_thin(now=now)

    assert deleted == 180 - 4
    kept_old = list(PortfolioSnapshot.objects.filter(created_at__lt=now - timedelta(days=7))
                    .order_by("created_at").values_list("created_at", flat=True))
    assert kept_old == [old_start, old_start + timedelta(minutes=30), old_start + timedelta(minutes=90),
                        old_start + timedelta(minutes=150)]
    assert PortfolioSnapshot.objects.filter(created_at__gte=recent_start).count() == 90  # the week: all kept
    assert PortfolioSnapshot.objects.aggregate(p=Max("peak_equity"))["p"] == peak  # carried by the later rows
    assert portfolio_snapshots_thin(now=now) == 0
    assert PortfolioSnapshot.objects.count() == 94


@pytest.mark.django_db
@override_settings(SNAPSHOT_KEEP_ALL_DAYS=1, SNAPSHOT_THIN_KEEP_SECONDS=1800)
def test_thin_task_when_settings_changed_then_thins_by_them():
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=2)
    PortfolioSnapshot.objects.bulk_create(_rows(start, 120) + _rows(now - timedelta(hours=3), 60))
    thin_portfolio_snapshots()
    # Two days ago, 120 rows from a whole hour: half-hour buckets -> 4 kept; the last day untouched.
    assert PortfolioSnapshot.objects.filter(created_at__lt=now - timedelta(days=1)).count() == 4
    assert PortfolioSnapshot.objects.filter(created_at__gte=now - timedelta(days=1)).count() == 60


# --- the beat schedule, editable in the admin ---------------------------------------------------------


@pytest.mark.django_db
def test_bootstrap_when_schedules_missing_then_created_every_60s_and_5min_on_default_queue():
    bootstrap(demo_agents=False)
    tasks = {t.name: t for t in PeriodicTask.objects.filter(
        name__in=["risk-snapshot", "agent-performance", "snapshot-thinning"]).select_related("interval")}
    assert {(n, t.task, t.queue, t.interval.every, t.interval.period, t.enabled) for n, t in tasks.items()} == {
        ("risk-snapshot", "trading.tasks.take_portfolio_snapshot", "default", 60, "seconds", True),
        ("agent-performance", "trading.tasks.update_agent_performance", "default", 300, "seconds", True),
        ("snapshot-thinning", "trading.tasks.thin_portfolio_snapshots", "default", 3600, "seconds", True),
    }


@pytest.mark.django_db
def test_bootstrap_when_operator_changed_interval_in_admin_then_kept(admin_client: Client):
    bootstrap(demo_agents=False)
    task = PeriodicTask.objects.get(name="risk-snapshot")
    page = admin_client.get(f"/admin/django_celery_beat/periodictask/{task.pk}/change/")
    assert page.status_code == 200 and b"risk-snapshot" in page.content
    # What the admin's save does: point the task at another interval, and switch another off.
    task.interval, _ = IntervalSchedule.objects.get_or_create(every=15, period=IntervalSchedule.SECONDS)
    task.save()
    PeriodicTask.objects.filter(name="snapshot-thinning").update(enabled=False)
    PeriodicTask.objects.filter(name="agent-performance").delete()

    bootstrap(demo_agents=False)

    task.refresh_from_db()
    assert (task.interval.every, task.enabled) == (15, True)
    assert PeriodicTask.objects.get(name="snapshot-thinning").enabled is False
    assert PeriodicTask.objects.get(name="agent-performance").interval.every == 300  # missing: created again


def test_runbook_position_summary_query_is_the_one_tested():
    assert runbook_query("Position Summary") == "SELECT * FROM portfolio_snapshots\nORDER BY created_at DESC LIMIT 1;"


@pytest.mark.django_db
def test_ccxt_marks_when_cache_warm_then_one_query_and_no_venue_request_else_fetched(settings):
    from django.utils import timezone

    from paper.exchange_server import LocalExchange
    from trading.feeds.ccxt_feed import CcxtFeed
    from trading.feeds.synthetic import SyntheticFeed

    venue_market = SyntheticFeed(seed=7)
    exchange = LocalExchange(feed=venue_market)
    server = exchange.serve(port=0)
    settings.EXCHANGE_API_URL = server.url
    try:
        feed, now = CcxtFeed("binance"), timezone.now()
        symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
        cold = feed.last_prices(symbols, now)  # nothing cached: each symbol through last_price (the venue)
        klines = len(exchange.requests(method="GET", path="/api/v3/klines"))
        assert klines == 3
        assert cold == {s: venue_market.candles(s, "1m", limit=1, end=now)[-1].close for s in symbols}
        with CaptureQueriesContext(connection) as queries:
            warm = feed.last_prices(symbols, now)
        assert warm == cold and len(queries) == 1
        assert len(exchange.requests(method="GET", path="/api/v3/klines")) == klines
    finally:
        server.stop()
