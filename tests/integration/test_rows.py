"""tinywindow.rows: set-based writes that store what save() stores, and locks in a fixed order."""

from decimal import Decimal

import pytest
from django.db import connection, connections, transaction
from django.forms.models import model_to_dict

from paper.models import PaperBalance, PaperOrder, PaperVenueOrder
from safety.models import CircuitBreakerState
from tinywindow.rows import has_save_signals, rows_lock, rows_update
from trading.lock_objects import lock_positions
from trading.models import Order, Position

pytestmark = pytest.mark.django_db
D = Decimal


def test_written_models_when_checked_then_nothing_listens_to_their_saves():
    # rows_update sends no signals: a listener added to one of these models would be skipped.
    for model in (Order, Position, PaperBalance, PaperVenueOrder, PaperOrder, CircuitBreakerState):
        assert not has_save_signals(model), model


def test_update_when_values_need_conversion_then_stored_as_save_would(agent):
    a, b = (Position.objects.create(agent=agent, symbol=s) for s in ("BTC/USDT", "ETH/USDT"))
    a.quantity, a.average_price, a.realized_pnl = D("0.123456789012345"), D("61234.5"), D("-1.25")
    b.quantity, b.fees_paid = D("2"), D("0.000000000001")
    before = b.updated_at
    assert rows_update([a, b], ("quantity", "average_price", "realized_pnl", "fees_paid", "updated_at")) == 2
    assert b.updated_at > before  # auto_now stamped, in memory too
    for position in (a, b):
        stored = Position.objects.get(pk=position.pk)
        position.save()  # what the ORM stores for the same values
        saved = Position.objects.get(pk=position.pk)
        assert model_to_dict(stored) == model_to_dict(saved)


def test_update_when_keyed_by_unique_field_then_only_those_rows(agent):
    venue = PaperVenueOrder.objects.create(client_order_id="c1", account="x", symbol="BTC/USDT", side="buy",
                                           order_type="market", quantity=D("1"))
    trades = [PaperOrder.objects.create(venue_order=venue, trade_id=f"T-{i}", client_order_id="c1", account="x",
                                        symbol="BTC/USDT", side="buy", quantity=D("1"), price=D("1"))
              for i in range(3)]
    rows_update([PaperOrder(trade_id="T-0", pnl=D("1.5")), PaperOrder(trade_id="T-2", pnl=D("-2"))], ("pnl",),
                key="trade_id")
    assert [PaperOrder.objects.get(pk=t.pk).pnl for t in trades] == [D("1.5"), None, D("-2")]
    assert rows_update([], ("pnl",)) == 0


def test_lock_when_positions_missing_then_created_flat_and_all_returned(agent):
    Position.objects.create(agent=agent, symbol="BTC/USDT", quantity=D("1"))
    locked = lock_positions([(agent.pk, "BTC/USDT"), (agent.pk, "ETH/USDT")])
    assert {key: p.quantity for key, p in locked.items()} == {(agent.pk, "BTC/USDT"): D("1"),
                                                              (agent.pk, "ETH/USDT"): D("0")}
    assert [p.symbol for p in rows_lock(Position, ("agent_id", "symbol"),
                                        [(agent.pk, "ETH/USDT"), (agent.pk, "BTC/USDT"), (agent.pk, "XRP/USDT")])] == [
        "BTC/USDT", "ETH/USDT"]  # sorted, the fixed lock order; a missing row is not made up


@pytest.mark.django_db(transaction=True)
def test_lock_when_prepared_and_a_migration_adds_a_column_meanwhile_then_still_runs(agent):
    Position.objects.create(agent=agent, symbol="BTC/USDT", quantity=D("1"))
    key = [(agent.pk, "BTC/USDT")]
    for _ in range(7):  # past psycopg's prepare threshold: the server now holds the plan
        with transaction.atomic():
            rows_lock(Position, ("agent_id", "symbol"), key)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                       [f'%FROM "{Position._meta.db_table}" WHERE%FOR UPDATE%'])
        assert cursor.fetchone()[0] == 1
    other = connections.create_connection("default")
    table = Position._meta.db_table
    try:
        with other.cursor() as cursor:  # what a deploy's migration does while the engines run
            cursor.execute(f'ALTER TABLE "{table}" ADD COLUMN added_by_a_migration integer')
        with transaction.atomic():
            assert [p.quantity for p in rows_lock(Position, ("agent_id", "symbol"), key)] == [D("1")]
    finally:
        with other.cursor() as cursor:
            cursor.execute(f'ALTER TABLE "{table}" DROP COLUMN IF EXISTS added_by_a_migration')
        other.close()


# --- CompiledQuery: a read compiled once, run with new values -----------------------------------


def _positions_of(agent_id, symbol):
    return Position.objects.filter(agent_id=agent_id, symbol=symbol).select_related("agent")


def test_compiled_query_when_run_with_other_values_then_same_rows_as_the_orm(agent):
    from django.db.models import F

    from tests.factories import make_agent
    from tinywindow.rows import CompiledQuery

    other = make_agent()
    for owner, symbol, quantity in ((agent, "BTC/USDT", "1.5"), (agent, "ETH/USDT", "-2"), (other, "BTC/USDT", "3")):
        Position.objects.create(agent=owner, symbol=symbol, quantity=D(quantity), average_price=D("10.25"))
    built = []

    def build(agent_id, symbol):
        built.append((agent_id, symbol))
        return _positions_of(agent_id, symbol).annotate(notional=F("quantity") * F("average_price"))

    query = CompiledQuery(build, agent_id=int, symbol=str)
    for owner, symbol in ((agent, "BTC/USDT"), (agent, "ETH/USDT"), (other, "BTC/USDT"), (other, "XRP/USDT")):
        got = query.instances(agent_id=owner.pk, symbol=symbol)
        want = list(_positions_of(owner.pk, symbol).annotate(notional=F("quantity") * F("average_price")))
        assert [model_to_dict(p) for p in got] == [model_to_dict(p) for p in want]
        assert [p.notional for p in got] == [p.notional for p in want]
        assert all(type(p.quantity) is Decimal and p._state.adding is False for p in got)
    assert len(built) == 1  # built and compiled at the first run only
    assert query.instances(agent_id=agent.pk, symbol="BTC/USDT")[0].agent.name == agent.name  # select_related

    counts = CompiledQuery(lambda agent_id: Position.objects.filter(agent_id=agent_id).values_list("symbol", "quantity")
                           .order_by("symbol"), agent_id=int)
    assert counts.rows(agent_id=agent.pk) == [("BTC/USDT", D("1.5")), ("ETH/USDT", D("-2"))]


def test_compiled_query_when_value_transformed_or_misnamed_then_clear_error(agent):
    from tinywindow.rows import CompiledQuery

    # icontains wraps the value in %...%: the compiled query no longer holds it, so it cannot be bound.
    transformed = CompiledQuery(lambda name: Order.objects.filter(symbol__icontains=name), name=str)
    with pytest.raises(TypeError, match="name"):
        transformed.rows(name="BTC")
    query = CompiledQuery(lambda agent_id: Position.objects.filter(agent_id=agent_id), agent_id=int)
    with pytest.raises(TypeError, match="agent_id"):
        query.rows(agent=agent.pk)
    with pytest.raises(TypeError, match="must be one of"):
        CompiledQuery(lambda symbols: Position.objects.filter(symbol__in=symbols), symbols=list)


@pytest.mark.django_db(transaction=True)
def test_compiled_query_when_locking_outside_a_transaction_then_refused_every_time(agent):
    from django.db import transaction
    from django.db.transaction import TransactionManagementError

    from tinywindow.rows import CompiledQuery

    position = Position.objects.create(agent=agent, symbol="BTC/USDT")
    lock = CompiledQuery(lambda pk: Position.objects.select_for_update().filter(pk=pk), pk=int)
    with pytest.raises(TransactionManagementError):  # Django's own check, at the first compile
        lock.instances(pk=position.pk)
    with transaction.atomic():
        assert lock.instances(pk=position.pk) == [position]
    with pytest.raises(TransactionManagementError):  # and ours, once compiled
        lock.instances(pk=position.pk)


def test_update_unchanged_when_a_row_changed_since_read_then_only_the_others_written(agent):
    from tinywindow.rows import rows_update_unchanged

    a, b = (Position.objects.create(agent=agent, symbol=s, quantity=D("1")) for s in ("BTC/USDT", "ETH/USDT"))
    Position.objects.filter(pk=b.pk).update(quantity=D("2"))  # b as read (quantity 1) is stale now
    a.realized_pnl, b.realized_pnl = D("5"), D("7")
    written = rows_update_unchanged([a, b], ("realized_pnl",), unchanged=("quantity",))
    assert written == {a.pk}
    assert Position.objects.get(pk=a.pk).realized_pnl == D("5")
    assert Position.objects.get(pk=b.pk).realized_pnl == 0 and Position.objects.get(pk=b.pk).quantity == D("2")
    assert rows_update_unchanged([], ("realized_pnl",), unchanged=("quantity",)) == set()
    with pytest.raises(ValueError, match="not written"):
        rows_update_unchanged([a], ("quantity",), unchanged=("quantity",))


@pytest.mark.django_db(transaction=True)
def test_order_locks_when_held_then_their_agents_are_not_locked(agent):
    """An execution locks its orders, not their agents. Locking the joined agent row too made two
    executions of one agent's orders wait for each other, and a fill's foreign-key check on its
    agent with them: `bench --only order_throughput` fell from 0.55-0.59x of bare to 0.36-0.41x,
    with deadlocks, when fills gained their agent's key."""
    import psycopg

    from tests.conftest import _test_database_url
    from trading.lock_objects import lock_order, lock_orders_to_send

    order = Order.objects.create(client_order_id="locked", agent=agent, exchange="paper", mode="paper",
                                 symbol="BTC/USDT", side="buy", quantity=Decimal("1"))
    with psycopg.connect(_test_database_url(), autocommit=True) as other:
        for take in (lambda: [lock_order(order.pk)], lambda: list(lock_orders_to_send([order.pk]))):
            with transaction.atomic():
                assert [o.pk for o in take()] == [order.pk]
                with pytest.raises(psycopg.errors.LockNotAvailable):  # the probe sees the order's lock
                    other.execute("SELECT 1 FROM orders WHERE id = %s FOR UPDATE NOWAIT", [order.pk])
                other.execute("SELECT 1 FROM agents WHERE id = %s FOR UPDATE NOWAIT", [agent.pk])
