"""Group commit on the paper venue: one `execute_order` delivery sends the other queued orders.

The batch must book exactly what sending the orders one by one books (same fills, positions,
balances, order states), respect the kill switch for every order it takes, leave orders held by
other workers and stale ones alone, and keep each order sent once when real workers race.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from paper.models import PaperBalance, PaperOrder, PaperVenueOrder
from safety.services.kill_switch import kill_switch_disengage, kill_switch_engage
from tests.conftest import wait_for_worker
from tests.factories import make_agent
from tests.helpers import wait_until
from trading.models import Fill, Order, Position
from trading.order_states import OrderStatus
from trading.services.orders import order_create, order_execute
from trading.tasks import execute_order

D = Decimal


def _order(agent, side: str, quantity: str) -> Order:
    order = order_create(agent=agent, symbol="BTC/USDT", side=side, quantity=D(quantity), enqueue=False)
    assert order.status == OrderStatus.PENDING, order.reject_reason
    return order


def _decisions(first, second) -> list[Order]:
    """The same decisions for a pair of agents: two orders of one agent in one symbol (the sell
    realizes PnL on the cost the buy before it left), another agent's, and one the venue refuses."""
    return [_order(first, "sell", "0.3"), _order(second, "buy", "0.2"), _order(first, "buy", "0.2"),
            _order(first, "buy", "150"), _order(second, "buy", "0.1")]


def _books(agent) -> dict:
    orders = [(o.side, o.quantity, o.status, o.filled_quantity, o.average_fill_price, o.fee, o.pnl,
               o.reject_reason.split(":")[0]) for o in Order.objects.filter(agent=agent).order_by("pk")]
    fills = list(Fill.objects.filter(order__agent=agent).order_by("pk")
                 .values_list("side", "quantity", "price", "fee", "realized_pnl"))
    position = Position.objects.filter(agent=agent).values_list(
        "quantity", "average_price", "realized_pnl", "fees_paid").first()
    account = f"agent-{agent.pk}"
    balances = {asset: (free, locked) for asset, free, locked in
                PaperBalance.objects.filter(account=account).values_list("asset", "free", "locked")}
    trade_pnls = list(PaperOrder.objects.filter(account=account).order_by("pk").values_list("pnl", flat=True))
    return {"orders": orders, "fills": fills, "position": position, "balances": balances, "trade_pnls": trade_pnls}


@pytest.mark.django_db
def test_execute_when_orders_queued_then_one_delivery_books_what_one_by_one_would(fixed_price_feed):
    batched, batched_peer, single, single_peer = (make_agent() for _ in range(4))
    for agent in (batched, single):  # a position to sell from, opened before
        order_execute(order_id=_order(agent, "buy", "0.5").pk)

    queued = _decisions(batched, batched_peer)
    with CaptureQueriesContext(connection) as batch_queries:
        order_execute(order_id=queued[0].pk)  # one delivery
    assert not Order.objects.filter(pk__in=[o.pk for o in queued], status=OrderStatus.PENDING).exists()

    single_queries = 0
    with override_settings(EXECUTION_BATCH_MAX=1):
        one_by_one = _decisions(single, single_peer)
        for order in one_by_one:
            with CaptureQueriesContext(connection) as queries:
                order_execute(order_id=order.pk)
            single_queries += len(queries)
            assert Order.objects.filter(status=OrderStatus.PENDING).count() == len(one_by_one) - 1 - one_by_one.index(
                order)  # nothing else taken along

    assert _books(batched) == _books(single)
    assert _books(batched_peer) == _books(single_peer)
    statuses = [Order.objects.get(pk=o.pk).status for o in queued]
    assert statuses == [OrderStatus.EXECUTED] * 3 + [OrderStatus.REJECTED, OrderStatus.EXECUTED]
    books = _books(batched)
    assert books["fills"][1][4] != 0  # the sell realized PnL (fees and slippage at an unchanged price) ...
    assert books["trade_pnls"] == [fill[4] for fill in books["fills"]]  # ... and it reached the venue's trades
    # The point of it: the statements per order, not the fixed part (a first order's account funding
    # and a refusal's own write are in both counts), are paid once for the batch.
    assert 2 * len(batch_queries) < single_queries, "\n".join(q["sql"][:150] for q in batch_queries)


@pytest.mark.django_db
def test_execute_when_more_queued_than_the_batch_limit_then_takes_the_oldest_up_to_it(agent, fixed_price_feed):
    orders = [_order(agent, "buy", "0.1") for _ in range(5)]
    with override_settings(EXECUTION_BATCH_MAX=3):
        order_execute(order_id=orders[4].pk)
    statuses = [Order.objects.get(pk=o.pk).status for o in orders]
    assert statuses == [OrderStatus.EXECUTED] * 2 + [OrderStatus.PENDING] * 2 + [OrderStatus.EXECUTED]


@pytest.mark.django_db
def test_execute_when_queued_order_is_stale_then_left_to_reconciliation(agent, fixed_price_feed):
    stale, fresh, own = (_order(agent, "buy", "0.1") for _ in range(3))
    Order.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(hours=1))
    order_execute(order_id=own.pk)
    assert Order.objects.get(pk=stale.pk).status == OrderStatus.PENDING
    assert Order.objects.get(pk=fresh.pk).status == OrderStatus.EXECUTED


@pytest.mark.django_db
def test_execute_when_kill_switch_active_then_every_queued_order_refused_and_none_at_venue(agent, fixed_price_feed):
    orders = [_order(agent, "buy", "0.1") for _ in range(4)]
    kill_switch_engage(mode="HALT_ONLY", reason="test halt", actor="t", source="test")
    try:
        order_execute(order_id=orders[0].pk)
    finally:
        kill_switch_disengage(actor="t", source="test")
    for order in orders:
        order.refresh_from_db()
        assert (order.status, order.reject_reason.startswith("kill switch")) == (OrderStatus.REJECTED, True)
    assert not PaperVenueOrder.objects.exists()


@pytest.mark.django_db
def test_delivery_when_order_already_sent_by_a_batch_then_stops_after_one_query(agent, fixed_price_feed):
    first, second = _order(agent, "buy", "0.1"), _order(agent, "buy", "0.1")
    order_execute(order_id=first.pk)  # sends `second` too
    with CaptureQueriesContext(connection) as queries:
        execute_order.apply(args=[second.pk]).get()
    assert len(queries) == 1, [q["sql"] for q in queries]
    assert PaperVenueOrder.objects.filter(client_order_id=second.client_order_id).count() == 1


@pytest.mark.django_db
def test_delivery_when_order_alone_then_no_claim_and_when_others_wait_then_sent_with_them(agent, fixed_price_feed):
    alone = _order(agent, "buy", "0.1")
    with CaptureQueriesContext(connection) as queries:
        execute_order.apply(args=[alone.pk]).get()
    statements = [q["sql"] for q in queries]
    alone.refresh_from_db()
    assert alone.status == OrderStatus.EXECUTED
    assert not any("SKIP LOCKED" in sql for sql in statements), statements  # nothing waited: no claim

    first, second = _order(agent, "buy", "0.1"), _order(agent, "buy", "0.1")
    execute_order.apply(args=[first.pk]).get()
    second.refresh_from_db()
    assert second.status == OrderStatus.EXECUTED  # the status read saw it waiting: claimed and sent


def test_orders_when_enqueued_at_once_to_two_engines_then_each_sent_once_and_books_consistent(start_worker):
    # A volume share at which 0.001 BTC fills at once in any minute of the synthetic feed (its
    # 1-minute BTC volume is at least 1.4; see test_faults.VOLUME_SHARE).
    engines = [start_worker("execution", name=f"engine{i}", concurrency=2,
                            extra_env={"PAPER_MAX_VOLUME_SHARE": "0.01"}) for i in range(2)]
    agents = [make_agent(capital=D("100000")) for _ in range(6)]
    orders = [order_create(agent=agents[i % 6], symbol="BTC/USDT", side="buy", quantity=D("0.001"), enqueue=False)
              for i in range(120)]
    assert {o.status for o in orders} == {OrderStatus.PENDING}, {o.reject_reason for o in orders}
    for engine in engines:
        wait_for_worker(engine)
    for order in orders:
        execute_order.delay(order.pk)
    ids = [o.pk for o in orders]
    wait_until(lambda: not Order.objects.filter(pk__in=ids, status__in=[OrderStatus.PENDING, OrderStatus.SUBMITTED])
               .exists(), timeout=90, message=f"every order answered ({engines[0].log_path})")

    assert Order.objects.filter(pk__in=ids, status=OrderStatus.EXECUTED).count() == len(ids)
    for order in orders:
        assert PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).count() == 1
        assert Fill.objects.filter(order_id=order.pk).aggregate(q=Sum("quantity"))["q"] == order.quantity
    for position in Position.objects.filter(agent__in=agents):
        assert position.quantity == D("0.020"), position  # twenty 0.001 buys of each agent
        balance = PaperBalance.objects.get(account=f"agent-{position.agent_id}", asset="BTC")
        assert (balance.free, balance.locked) == (position.quantity, 0)
    assert Position.objects.filter(agent__in=agents).count() == len(agents)
    assert Fill.objects.filter(order_id__in=ids).count() == PaperOrder.objects.count() == len(ids)
    # The backlog was sent in batches, not one order per transaction.
    assert any("group commit:" in engine.log() for engine in engines)
