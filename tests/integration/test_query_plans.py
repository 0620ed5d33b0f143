"""Hot reads at scale: their plans, not only their answers.

Every statement is prepared (DB_PREPARED_STATEMENTS), and once it has run a few times in a
connection PostgreSQL may plan it once for any parameter value (a generic plan), and keeps that
plan when it looks no dearer. For an EXISTS or a LIMIT over a state column given as a parameter it
does, and scans the table: the engine's look for other `pending` orders went from 0.35 ms to
28–34 ms at 200,000 orders after its tenth run; the gate's look for open breakers scanned every
breaker state (one per agent) on every order. The fixed states are now written into the SQL
(tinywindow.rows.constant_in). These tests plan each read the way PostgreSQL plans it once it goes
generic (`plan_cache_mode = force_generic_plan`) and look at the plan.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from psycopg import sql as pgsql
from psycopg.types.numeric import Int4

from safety.models import BreakerKind, BreakerScope, BreakerStatus, CircuitBreakerConfig, CircuitBreakerState
from safety.services import breakers
from safety.services.breakers import breaker_states, breaker_states_list, breakers_not_closed
from safety.services.gate import _safety_state_query, _safety_state_read
from tinywindow.rows import constant_in
from tinywindow.status import _status_sql, system_status
from trading.models import Fill, Order
from trading.order_states import OrderStatus
from trading.selectors import _ORDER_STATUS, order_status
from trading.services.orders import _claim_query, group_commit_since

pytestmark = pytest.mark.django_db

STATES = 3000
INDEX = "breaker_states_not_closed_idx"


@pytest.fixture
def many_closed_states():
    """A per-agent breaker with STATES closed states, one OPEN and one HALF_OPEN, analysed."""
    config = CircuitBreakerConfig.objects.create(name="losses-at-scale", kind=BreakerKind.CONSECUTIVE_LOSSES,
                                                 scope=BreakerScope.AGENT, threshold=Decimal("8"))
    CircuitBreakerState.objects.bulk_create(
        [CircuitBreakerState(config=config, target=str(i), state=BreakerStatus.CLOSED) for i in range(STATES)]
        + [CircuitBreakerState(config=config, target="open", state=BreakerStatus.OPEN),
           CircuitBreakerState(config=config, target="probing", state=BreakerStatus.HALF_OPEN)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE circuit_breaker_states")
    return config


_TYPES = {Int4: "int4", int: "int8", str: "text", datetime: "timestamptz"}


def generic_plan(sql: str, params) -> str:
    """The plan PostgreSQL makes for `sql` (with %s placeholders) when it plans it for any value."""
    types = ", ".join(_TYPES[type(p)] for p in params)
    placeholders = tuple(f"${i + 1}" for i in range(len(params)))
    values = ", ".join(pgsql.Literal(p).as_string(connection.connection) for p in params)
    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        try:
            cursor.execute(f"PREPARE plan_probe ({types}) AS {sql % placeholders}" if params
                           else f"PREPARE plan_probe AS {sql}")
            cursor.execute(f"EXPLAIN EXECUTE plan_probe ({values})" if params else "EXPLAIN EXECUTE plan_probe")
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE ALL")
            cursor.execute("RESET plan_cache_mode")


def assert_reads_index(plan: str) -> None:
    assert INDEX in plan, plan
    assert "Seq Scan on circuit_breaker_states" not in plan, plan


def test_probe_when_states_are_parameters_then_generic_plan_scans_every_state(many_closed_states):
    """What the change avoids, seen through the same probe (so the probe can tell the two apart)."""
    plan = generic_plan('SELECT 1 FROM "circuit_breaker_states" WHERE "state" IN (%s, %s) LIMIT 1',
                        ["OPEN", "HALF_OPEN"])
    assert INDEX not in plan and "Seq Scan on circuit_breaker_states" in plan, plan


def test_gate_read_when_thousands_closed_then_index_and_right_answer(many_closed_states):
    sql, params = _safety_state_query()
    assert_reads_index(generic_plan(sql, params))
    _, not_closed = _safety_state_read()
    assert {(s.target, s.state) for s in not_closed} == {("open", BreakerStatus.OPEN),
                                                          ("probing", BreakerStatus.HALF_OPEN)}


def test_not_closed_reads_when_thousands_closed_then_index_and_only_those(many_closed_states):
    # The one query behind breakers_not_closed() and breaker_states(not_closed=True).
    assert_reads_index(generic_plan(*breaker_states_list(not_closed=True).query.sql_with_params()))
    expected = {"losses-at-scale:open", "losses-at-scale:probing"}
    assert {s.name for s in breakers_not_closed()} == expected
    assert {s.name for s in breaker_states(not_closed=True)} == expected


def test_status_when_thousands_closed_then_index_and_the_open_ones(many_closed_states):
    from safety.models import KillSwitchState

    assert_reads_index(generic_plan(_status_sql(), [KillSwitchState.SINGLETON_ID]))
    status = system_status()
    assert status.breaker_status == BreakerStatus.OPEN
    assert {s.name for s in status.open_breakers} == {"losses-at-scale:open", "losses-at-scale:probing"}


def test_status_counts_when_agents_and_orders_in_each_state_then_counted(agent):
    from tests.factories import make_agent
    from trading.models import Agent, AgentStatus, Order
    from trading.order_states import OrderStatus

    for status in (AgentStatus.PAUSED, AgentStatus.STOPPED, AgentStatus.STOPPED):
        Agent.objects.filter(pk=make_agent().pk).update(status=status)
    for i, status in enumerate([OrderStatus.PENDING, OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED,
                                OrderStatus.EXECUTED, OrderStatus.CANCELLED, OrderStatus.REJECTED]):
        Order.objects.create(client_order_id=f"count-{i}", agent=agent, exchange="paper", mode="paper",
                             symbol="BTC/USDT", side="buy", quantity=Decimal("1"), status=status)
    status = system_status()
    assert status.agents == {AgentStatus.ACTIVE: 1, AgentStatus.PAUSED: 1, AgentStatus.STOPPED: 2}
    assert status.open_orders == 3
    assert status.breaker_status == BreakerStatus.CLOSED and status.open_breakers == []


@pytest.mark.parametrize("values", [[], ["OPEN", "x'; DROP TABLE orders; --"], ["with space"], ["1"]])
def test_constant_in_when_not_plain_words_then_refused(values):
    with pytest.raises(ValueError, match="plain words"):
        constant_in('"state"', values)


def test_constant_in_when_words_then_sorted_literals():
    assert constant_in('"state"', ["OPEN", "HALF_OPEN", "OPEN"]) == "\"state\" IN ('HALF_OPEN', 'OPEN')"


@pytest.fixture
def many_done_orders(agent):
    """ORDERS finished orders of one venue, analysed: a book after some months of trading."""
    Order.objects.bulk_create([
        Order(client_order_id=f"done-{i}", agent=agent, exchange="paper", mode="paper", symbol="BTC/USDT",
              side="buy", quantity=Decimal("1"), status=OrderStatus.EXECUTED) for i in range(ORDERS)],
        batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE orders")
    return Order.objects.filter(agent=agent).order_by("pk").last()


ORDERS = 20_000


def test_engine_look_for_pending_orders_when_many_done_then_no_scan_of_orders(many_done_orders):
    """Every execute_order delivery asks it first (order_status), and the group-commit claim
    after it: neither may walk the orders table."""
    assert "Seq Scan on orders" not in generic_plan(*_ORDER_STATUS._compile("default")[:2])
    with transaction.atomic():
        claim_sql, claim_params = _claim_query(50)._compile("default")[:2]
        assert "Seq Scan on orders" not in generic_plan(claim_sql, claim_params)
    # Same answers: nothing else waits for the venue; then a pending order of the same venue does.
    read = order_status(many_done_orders.pk, pending_since=group_commit_since())
    assert (read.status, read.others_pending) == (OrderStatus.EXECUTED, False)
    Order.objects.create(client_order_id="waiting", agent=many_done_orders.agent, exchange="paper", mode="paper",
                         symbol="BTC/USDT", side="buy", quantity=Decimal("1"), status=OrderStatus.PENDING)
    assert order_status(many_done_orders.pk, pending_since=group_commit_since()).others_pending is True


@pytest.fixture
def orders_of_many_agents():
    """PAGE_AGENTS agents with PAGE_ORDERS_EACH orders each, analysed."""
    from tests.factories import make_agent

    agents = [make_agent(name=f"pager-{i}") for i in range(PAGE_AGENTS)]
    Order.objects.bulk_create([
        Order(client_order_id=f"p-{i}", agent=agents[i % PAGE_AGENTS], exchange="paper", mode="paper",
              symbol="BTC/USDT", side="buy", quantity=Decimal("1"), status=OrderStatus.EXECUTED)
        for i in range(PAGE_AGENTS * PAGE_ORDERS_EACH)], batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE orders")
    return agents


PAGE_AGENTS, PAGE_ORDERS_EACH = 20, 1000


def test_orders_pages_when_many_orders_then_read_in_index_order_with_no_sort(orders_of_many_agents):
    """/api/orders/'s pages, newest first by (created_at, id): the first page and one behind a
    cursor, of every order and of one agent's. With the id in the index the page comes out of it in
    order and the scan stops at the page's end; without, PostgreSQL sorts each run of equal
    timestamps (an Incremental Sort on every request)."""
    from trading.api.serializers import ORDER_ROWS
    from trading.selectors import orders_list

    agent = orders_of_many_agents[3]
    middle = Order.objects.filter(agent=agent).order_by("created_at")[PAGE_ORDERS_EACH // 2].created_at
    for filters, index in (({}, "orders_created_id_idx"), ({"agent_id": agent.pk}, "orders_agent_created_id_idx")):
        for cursor in ({}, {"created_at__lt": middle}):
            page = orders_list(base=ORDER_ROWS.base, **filters).filter(**cursor)[:101]
            plan = generic_plan(*page.query.sql_with_params())
            assert f"Index Scan Backward using {index} on orders" in plan, plan
            assert "Sort" not in plan, plan
            assert len(page) == 101


def test_probe_when_pending_is_a_parameter_then_generic_plan_scans_orders(many_done_orders):
    plan = generic_plan('SELECT 1 FROM "orders" WHERE "status" = %s AND "exchange" = %s LIMIT 1',
                        ["pending", "paper"])
    assert "Seq Scan on orders" in plan, plan


@pytest.fixture
def many_agents_trading():
    """TRADERS agents with FILLS_EACH closing fills each, analysed, beside many more orders than fills."""
    from tests.factories import make_agent

    agents = [make_agent(name=f"trader-{i}") for i in range(TRADERS)]
    orders = Order.objects.bulk_create([
        Order(client_order_id=f"t-{i}", agent=agents[i % TRADERS], exchange="paper", mode="paper",
              symbol="BTC/USDT", side="sell", quantity=Decimal("1"), status=OrderStatus.EXECUTED)
        for i in range(TRADERS * FILLS_EACH * 5)], batch_size=5000)
    now = datetime.now(UTC)
    Fill.objects.bulk_create([
        Fill(order=order, agent_id=order.agent_id, exchange="paper", trade_id=f"trade-{order.pk}", symbol="BTC/USDT",
             side="sell", quantity=Decimal("1"), price=Decimal("1"), realized_pnl=Decimal(-1 if i % 2 else 1),
             executed_at=now - timedelta(seconds=i)) for i, order in enumerate(orders[:TRADERS * FILLS_EACH])],
        batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE orders, fills")
    return agents


TRADERS, FILLS_EACH = 200, 20


def test_losing_streaks_of_every_agent_when_many_fills_then_each_an_index_range_and_no_orders(many_agents_trading):
    """The consecutive-losses breaker reads every agent's latest closing trades in one statement.
    Through a join with orders its plan depended on the statistics of `fills` (with stale ones,
    a walk of the orders primary key per agent); it now reads one range of an index of fills."""
    config = CircuitBreakerConfig.objects.create(name="streaks-at-scale", kind=BreakerKind.CONSECUTIVE_LOSSES,
                                                 scope=BreakerScope.AGENT, threshold=Decimal("3"))
    depth = breakers._streak_depth(config)
    targets = [str(a.pk) for a in many_agents_trading]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + breakers._LATEST_CLOSING_SQL,
                       [depth, targets, [int(t) for t in targets], [None] * len(targets)])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "fills_agent_closing_idx" in plan, plan
    assert "orders" not in plan and "Seq Scan on fills" not in plan, plan
    # The answer matches the per-agent read. Each agent's fills all lose or all win (the fixture
    # alternates fills across an even number of agents): a full streak, or none.
    states = {t: CircuitBreakerState(config=config, target=t) for t in targets}
    at_once = breakers._measure_consecutive_losses_of_agents(config, states)
    now = datetime.now(UTC)
    one_by_one = {t: breakers._measure_consecutive_losses(config, t, now, None) for t in targets}
    assert at_once == one_by_one
    losing = {str(agent_id) for agent_id in Fill.objects.filter(realized_pnl__lt=0).values_list("agent_id", flat=True)}
    assert len(losing) == TRADERS // 2
    assert {t: m.value for t, m in at_once.items()} == {t: depth if t in losing else 0 for t in targets}


def test_losing_streak_when_agent_mostly_opens_then_its_opening_fills_not_walked(agent):
    """An agent that mostly buys has thousands of fills that realize nothing; its streak read and
    its day's realized PnL walk only its closing fills (a partial index)."""
    orders = Order.objects.bulk_create([
        Order(client_order_id=f"opening-{i}", agent=agent, exchange="paper", mode="paper", symbol="BTC/USDT",
              side="buy", quantity=Decimal("1"), status=OrderStatus.EXECUTED) for i in range(3002)], batch_size=5000)
    now = datetime.now(UTC)
    Fill.objects.bulk_create([
        Fill(order=order, agent=agent, exchange="paper", trade_id=f"open-{order.pk}", symbol="BTC/USDT", side="buy",
             quantity=Decimal("1"), price=Decimal("1"), realized_pnl=Decimal(-1 if i < 2 else 0),
             executed_at=now - timedelta(seconds=i)) for i, order in enumerate(orders)], batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE fills")
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + breakers._LATEST_CLOSING_SQL,
                       [6, [str(agent.pk)], [agent.pk], [None]])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "fills_agent_closing_idx" in plan and "Rows Removed by Filter" not in plan, plan
    config = CircuitBreakerConfig.objects.create(name="opening-agent", kind=BreakerKind.CONSECUTIVE_LOSSES,
                                                 scope=BreakerScope.AGENT, threshold=Decimal("5"))
    assert breakers._measure_consecutive_losses(config, str(agent.pk), now, None).value == 2
    daily = CircuitBreakerConfig.objects.create(name="opening-daily", kind=BreakerKind.DAILY_LOSS,
                                                scope=BreakerScope.AGENT, threshold=Decimal("100"))
    assert breakers._measure_daily_loss(daily, str(agent.pk), now, None).value == 2
