"""risk_check_order against the database: the facts it reads (positions, open and recent orders)
and the limit rows it combines come from one query; each limit must see exactly its facts."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from paper.markets import paper_market
from safety.models import RiskLimit
from safety.services.risk import risk_check_order
from tests.factories import make_agent
from trading.models import Order, Position

pytestmark = pytest.mark.django_db
D = Decimal
BTC = paper_market("BTC/USDT")


def _order(agent, *, side="buy", quantity="0.01", symbol="BTC/USDT", status="pending", **fields):
    return Order(agent=agent, exchange=agent.exchange, mode=agent.mode, symbol=symbol, side=side,
                 order_type="market", quantity=D(quantity), status=status, **fields)


def _saved(agent, client_order_id, **fields):
    order = _order(agent, client_order_id=client_order_id, **fields)
    order.save()
    return order


def _check(agent, *, last_price="100", **order):
    return risk_check_order(_order(agent, **order), market=BTC, last_price=D(last_price), now=timezone.now())


@pytest.fixture
def no_limits():
    RiskLimit.objects.all().delete()


def test_open_orders_when_global_limit_reached_then_only_that_agent_refused(no_limits):
    RiskLimit.objects.create(max_open_orders=2)
    busy, idle = make_agent(), make_agent()
    for index, status in enumerate(("pending", "submitted", "executed", "cancelled")):
        _saved(busy, f"open-{index}", status=status)
    _saved(idle, "idle-1")

    refused = _check(busy, quantity="1")
    assert not refused.allowed and "2 open orders (max 2)" in refused.reason  # executed/cancelled not open
    assert _check(idle, quantity="1").allowed


def test_orders_per_minute_when_agent_row_stricter_then_it_wins_and_old_orders_not_counted(no_limits):
    agent = make_agent()
    RiskLimit.objects.create(max_orders_per_minute=100)
    RiskLimit.objects.create(agent=agent, max_orders_per_minute=3)
    for index in range(3):
        _saved(agent, f"recent-{index}", status="executed")
    Order.objects.filter(client_order_id="recent-0").update(created_at=timezone.now() - timedelta(seconds=61))

    assert _check(agent, quantity="1").allowed  # two in the last minute
    _saved(agent, "recent-3", status="executed")
    refused = _check(agent, quantity="1")
    assert not refused.allowed and "3 orders in the last minute (max 3)" in refused.reason


def test_gross_exposure_when_positions_in_several_symbols_then_marked_and_summed(no_limits):
    agent = make_agent(symbols=["BTC/USDT", "ETH/USDT"])
    Position.objects.create(agent=agent, symbol="BTC/USDT", quantity=D("1"), average_price=D("90"))
    Position.objects.create(agent=agent, symbol="ETH/USDT", quantity=D("-2"), average_price=D("50"))
    Position.objects.create(agent=agent, symbol="SOL/USDT", quantity=D("0"), average_price=D("999"))
    # Gross now: BTC marked at the last price 100 (the order's symbol) + ETH at its average 2 * 50 = 200.
    # Buying 0.5 BTC at 100: BTC becomes 150, gross 250.
    RiskLimit.objects.create(max_gross_exposure=D("250"))
    assert _check(agent, quantity="0.5").allowed
    RiskLimit.objects.update(max_gross_exposure=D("249.99"))
    refused = _check(agent, quantity="0.5")
    assert not refused.allowed and "gross exposure would be 250.00" in refused.reason
    # The position limit sees this agent's BTC position (1 + 0.5 at 100), not another's.
    RiskLimit.objects.update(max_gross_exposure=None, max_position_notional=D("149.99"))
    assert "position notional would be 150.00" in _check(agent, quantity="0.5").reason
    assert _check(make_agent(), quantity="0.5").allowed


def test_no_limit_rows_when_checked_then_allowed(no_limits):
    agent = make_agent()
    Position.objects.create(agent=agent, symbol="BTC/USDT", quantity=D("1000"), average_price=D("100"))
    assert _check(agent, quantity="1000").allowed
