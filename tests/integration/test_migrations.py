"""Migrations that change rows already there, run against rows already there."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.factories import make_agent
from trading.models import Fill, Order


def migrate_to(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


@pytest.mark.django_db(transaction=True)
def test_fill_agent_when_fills_exist_then_each_takes_its_orders_agent():
    agents = [make_agent(), make_agent()]
    fills = []
    for i, agent in enumerate(agents * 2):
        order = Order.objects.create(client_order_id=f"before-{i}", agent=agent, exchange="paper", mode="paper",
                                     symbol="BTC/USDT", side="buy", quantity=Decimal("1"), status="executed")
        fills.append(Fill.objects.create(order=order, agent=agent, exchange="paper", trade_id=f"trade-{i}",
                                         symbol="BTC/USDT", side="buy", quantity=Decimal("1"), price=Decimal("1"),
                                         executed_at=datetime.now(UTC)))
    leaf = MigrationExecutor(connection).loader.graph.leaf_nodes("trading")[0]
    migrate_to(("trading", "0005_backtests"))  # before fills had an agent
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'fills'")
            assert "agent_id" not in {row[0] for row in cursor.fetchall()}
    finally:
        migrate_to(leaf)
    assert {f.pk: f.agent_id for f in Fill.objects.all()} == {f.pk: f.order.agent_id for f in fills}
    assert len({f.agent_id for f in Fill.objects.all()}) == 2
