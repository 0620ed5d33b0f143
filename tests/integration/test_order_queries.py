"""Round trips per paper order, pinned: each query is a round trip to PostgreSQL, and on a
loaded 2-core machine the order path's speed is mostly their number (issue 10's order
throughput and tick → fill goals). Upper bounds, so a change that adds queries to the hot
path shows here; the measured figures are in the comments. Times are for `manage.py bench`.
"""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from paper.models import PaperBalance, PaperOrder
from safety.services.kill_switch import kill_switch_engage
from tests.helpers import wait_until
from trading.gateways.base import venue_account
from trading.models import Fill, Order, Position
from trading.order_states import OrderStatus
from trading.services.orders import order_create, order_execute

pytestmark = pytest.mark.django_db
D = Decimal

# BEGIN/COMMIT and savepoints are counted too (CaptureQueriesContext sees them).
MAX_QUERIES_EXECUTE = 20  # measured 18: gate lock, safety state, order lock, venue (8), books (5)
MAX_QUERIES_CREATE = 6  # measured 5: breakers (no Redis mirror here), risk limits with the book, insert (3)
MAX_QUERIES_TICK = 8  # measured 7: the agent with its book, CREATE's 5, the decision


def _statements(context: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in context.captured_queries]


def test_execute_when_account_funded_then_bounded_queries_and_books_agree(agent, fixed_price_feed):
    order_execute(order_id=order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("1")).pk)
    with CaptureQueriesContext(connection) as create:
        order = order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("2"))
    with CaptureQueriesContext(connection) as execute:
        order = order_execute(order_id=order.pk)

    assert len(create) <= MAX_QUERIES_CREATE, "\n".join(_statements(create))
    assert len(execute) <= MAX_QUERIES_EXECUTE, "\n".join(_statements(execute))
    # Fewer queries, same books: the order, its fill, the venue's trade, position and balances agree.
    assert order.status == OrderStatus.EXECUTED and order.filled_quantity == D("2")
    fill = Fill.objects.get(order=order)
    trade = PaperOrder.objects.get(client_order_id=order.client_order_id)
    assert (trade.trade_id, trade.quantity, trade.price, trade.fee, trade.pnl) == (
        fill.trade_id, fill.quantity, fill.price, fill.fee, fill.realized_pnl)
    assert Position.objects.get(agent=agent).quantity == D("3")
    balances = {b.asset: b for b in PaperBalance.objects.filter(account=venue_account(agent.pk))}
    assert balances["BTC"].free == D("3") and balances["USDT"].locked == 0
    spent = sum(f.quantity * f.price + f.fee for f in Fill.objects.filter(order__agent=agent))
    assert balances["USDT"].free == D("10000") - spent


def test_tick_when_it_orders_then_bounded_queries_and_no_compile_of_the_hot_reads(agent, fixed_price_feed):
    """A tick that orders: its reads before the decision are one query (the agent with its positions
    and open orders), and the risk check's two; the hot reads are compiled once (tinywindow.rows)."""
    from trading.services.agents import agent_tick

    Position.objects.create(agent=agent, symbol="BTC/USDT", quantity=D("0"))
    agent.strategy, agent.params = "tinywindow.bench.strategies.Alternate", {"exposure": "0.5"}
    agent.save()
    agent_tick(agent_id=agent.pk, tick_id="warm")  # compiles the hot reads
    Order.objects.filter(agent=agent).update(status=OrderStatus.CANCELLED)
    with CaptureQueriesContext(connection) as tick:
        result = agent_tick(agent_id=agent.pk, tick_id="pinned")
    statements = _statements(tick)
    assert len(result.order_ids) == 1, result.decisions
    assert len(statements) <= MAX_QUERIES_TICK, "\n".join(statements)
    assert sum(sql.startswith('SELECT "agents"') for sql in statements) == 1  # no second read of the agent


def test_execute_when_kill_switch_active_then_refused_under_the_gate_before_the_venue(agent, fixed_price_feed):
    order = order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("1"))
    kill_switch_engage(mode="HALT_ONLY", reason="pinned", actor="t", source="test")
    with CaptureQueriesContext(connection) as execute:
        order = order_execute(order_id=order.pk)
    statements = _statements(execute)
    assert order.status == OrderStatus.REJECTED and "kill switch active" in order.reject_reason
    assert not any("paper_venue_orders" in sql for sql in statements)
    # The gate is taken before the safety state is read: the read sees any activation that held it.
    gate = next(i for i, sql in enumerate(statements) if "pg_advisory_xact_lock_shared" in sql)
    state = next(i for i, sql in enumerate(statements) if "kill_switch_state" in sql)
    assert gate < state


def test_execute_when_first_order_of_agent_then_account_funded_once(agent, fixed_price_feed):
    first = order_execute(order_id=order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("1")).pk)
    second = order_execute(order_id=order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("1")).pk)
    assert first.status == second.status == OrderStatus.EXECUTED, (first.reject_reason, second.reject_reason)
    usdt = PaperBalance.objects.get(account=venue_account(agent.pk), asset="USDT")
    spent = sum(f.quantity * f.price + f.fee for f in Fill.objects.filter(order__in=[first, second]))
    assert usdt.free == D("10000") - spent  # funded with the agent's capital exactly once
    assert Order.objects.filter(agent=agent, status=OrderStatus.EXECUTED).count() == 2


@pytest.mark.django_db(transaction=True)
def test_worker_after_task_when_gate_hold_leaked_then_connection_closed_and_gate_free():
    """Workers keep their connection between tasks; a session-level gate hold a task failed to
    release must not outlive it, or every kill-switch activation would wait on it."""
    import psycopg

    from safety.services.gate import trading_gate, trading_gate_leaked
    from safety.services.kill_switch import TRADING_GATE_LOCK_KEY
    from tests.conftest import _test_database_url
    from tinywindow.celery_signals import db_connections_after_task

    held = trading_gate()
    held.__enter__()  # a task that dies between the lock and its release (the unlock never runs)
    assert trading_gate_leaked()
    url = _test_database_url().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [TRADING_GATE_LOCK_KEY]).fetchone()[0] is False

        db_connections_after_task(task=None)

        assert not trading_gate_leaked() and connection.connection is None
        # The server drops the session's locks when its backend has exited, just after the close.
        wait_until(lambda: other.execute("SELECT pg_try_advisory_lock(%s)", [TRADING_GATE_LOCK_KEY]).fetchone()[0],
                   timeout=10, message="the leaked gate released by the closed connection")
        other.execute("SELECT pg_advisory_unlock(%s)", [TRADING_GATE_LOCK_KEY])


MAX_QUERIES_PER_FLATTEN_ORDER = 12  # measured 10 (one transaction for the batch, ~6 queries besides)


def test_close_positions_batch_when_many_positions_then_bounded_queries_per_order_and_all_flat(fixed_price_feed):
    from safety.services.kill_switch import kill_switch_read_db
    from tests.factories import make_agent
    from trading.services.orders import orders_execute_batch, orders_flatten_create

    agents = [make_agent(symbols=["BTC/USDT", "ETH/USDT"]) for _ in range(3)]
    for agent in agents:
        for symbol in ("BTC/USDT", "ETH/USDT"):
            order_execute(order_id=order_create(agent=agent, symbol=symbol, side="buy", quantity=D("1")).pk)
    kill_switch_engage(mode="CLOSE_POSITIONS", reason="pinned", actor="t", source="test")
    positions = list(Position.objects.exclude(quantity=0).select_related("agent").order_by("pk"))
    flatten = orders_flatten_create(positions=positions, reason="flatten", kill_switch=kill_switch_read_db())
    assert [o.status for o in flatten] == [OrderStatus.PENDING] * 6 and all(o.pk for o in flatten)

    with CaptureQueriesContext(connection) as batch:
        done = orders_execute_batch(order_ids=[o.pk for o in flatten])

    assert len(batch) <= 8 + MAX_QUERIES_PER_FLATTEN_ORDER * len(flatten), "\n".join(_statements(batch))
    assert [o.status for o in done] == [OrderStatus.EXECUTED] * 6
    assert not Position.objects.exclude(quantity=0).exists()
    # Only the flattening orders passed the gate while CLOSE_POSITIONS is active.
    assert order_create(agent=agents[0], symbol="BTC/USDT", side="buy", quantity=D("1")).status == "rejected"


def test_flatten_dispatch_when_agents_hold_several_positions_then_slices_on_safety_queue_split_by_agent(
        redis_client, settings):
    """The flattening batches go on `safety` (never behind a backlog on `execution`), and an agent's
    orders share one slice: batches hold their accounts' balance rows until they commit."""
    import base64
    import json
    from types import SimpleNamespace

    from safety.services.enforcement import _dispatch_batches

    settings.KILL_SWITCH_FLATTEN_PARALLELISM = 2
    orders = [SimpleNamespace(pk=pk, agent_id=agent_id)
              for pk, agent_id in enumerate([7, 8, 7, 9, 8, 7, 9, 10], start=1)]
    _dispatch_batches(orders)

    messages = [json.loads(raw) for raw in redis_client.lrange("safety", 0, -1)]
    slices = [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages
              if m["headers"]["task"] == "trading.tasks.execute_orders"]
    assert not redis_client.llen("execution")
    assert len(slices) == 2 and sorted(pk for s in slices for pk in s) == list(range(1, 9))
    agents_of = [{o.agent_id for o in orders if o.pk in s} for s in slices]
    assert not agents_of[0] & agents_of[1]
    assert sorted(len(s) for s in slices) == [4, 4]  # 7: three orders, 8 and 9: two, 10: one


def test_inline_breaker_checks_when_burst_of_fills_then_at_most_one_waits_on_safety_queue(redis_client):
    """Inline checks after fills must not pile up on `safety` in front of the kill switch's tasks:
    a queued check that has not started measures after every later event anyway."""
    import json

    from safety.services.breakers import breakers_check_soon, breakers_check_started

    kinds = ["daily_loss", "consecutive_losses", "drawdown"]

    def queued() -> int:
        return sum(json.loads(raw)["headers"]["task"] == "safety.tasks.check_breakers"
                   for raw in redis_client.lrange("safety", 0, -1))

    for _ in range(5):  # five fills, each past the once-a-second throttle
        redis_client.delete("tinywindow:breakers:check_soon:" + ",".join(sorted(kinds)))
        breakers_check_soon(kinds)
    assert queued() == 1

    breakers_check_started(kinds)  # the worker took it: the next fill queues a fresh one
    redis_client.delete("tinywindow:breakers:check_soon:" + ",".join(sorted(kinds)))
    breakers_check_soon(kinds)
    assert queued() == 2
