"""The order path in-process against real PostgreSQL and Redis, with the paper venue."""

from decimal import Decimal

import pytest

from paper.models import PaperOrder, PaperVenueOrder
from safety.services.kill_switch import kill_switch_disengage, kill_switch_engage
from tinywindow.exceptions import InvalidOrderTransition, ValidationError
from trading.models import Fill, Order, Position
from trading.order_states import OrderStatus
from trading.services.agents import agent_tick
from trading.services.orders import order_apply_report, order_create, order_execute, order_transition
from trading.services.snapshots import portfolio_snapshot_take

pytestmark = pytest.mark.django_db
D = Decimal


def _buy(agent, quantity="0.5"):
    return order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D(quantity))


def test_create_when_valid_then_pending_with_unique_client_order_id(agent, fixed_price_feed):
    first, second = _buy(agent), _buy(agent)
    assert first.status == OrderStatus.PENDING
    assert first.client_order_id != second.client_order_id
    assert Order.objects.filter(status="pending").count() == 2


def test_execute_when_pending_then_executed_with_fill_position_and_paper_trade(agent, fixed_price_feed):
    order = order_execute(order_id=_buy(agent).pk)
    assert order.status == OrderStatus.EXECUTED
    assert order.filled_quantity == D("0.5")
    fill = Fill.objects.get(order=order)
    # Bought above the reference price: slippage moves against the taker.
    assert fill.price > D("100")
    assert fill.fee == (fill.quantity * fill.price * D("0.001")).quantize(D("0.00000001"))
    position = Position.objects.get(agent=agent, symbol="BTC/USDT")
    assert position.quantity == D("0.5")
    assert position.average_price == (fill.quantity * fill.price + fill.fee) / fill.quantity
    trade = PaperOrder.objects.get(client_order_id=order.client_order_id)
    assert trade.pnl == D("0")  # an opening buy realizes nothing; its fee sits in the cost basis


def test_execute_when_filled_or_refused_then_the_stored_row_is_the_order_in_memory(agent, fixed_price_feed):
    """A venue report writes only Order.STATE_FIELDS: every field it changes must be one of them."""
    from django.forms.models import model_to_dict

    bought = order_execute(order_id=_buy(agent).pk)
    fixed_price_feed.price = D("110")
    sold = order_execute(order_id=order_create(agent=agent, symbol="BTC/USDT", side="sell", quantity=D("0.5")).pk)
    refused = order_execute(order_id=_buy(agent, "200").pk)  # 20,000 USDT: more than the account holds
    assert (bought.status, sold.status, refused.status) == (OrderStatus.EXECUTED, OrderStatus.EXECUTED,
                                                             OrderStatus.REJECTED)
    assert sold.pnl > 0 and sold.venue_order_id and refused.reject_reason.startswith("venue")
    for order in (bought, sold, refused):
        stored = Order.objects.get(pk=order.pk)
        assert model_to_dict(stored) == model_to_dict(order)
        assert (stored.submitted_at, stored.closed_at, stored.updated_at) == (
            order.submitted_at, order.closed_at, order.updated_at)


def test_execute_when_round_trip_then_sell_pnl_in_order_and_paper_orders(agent, fixed_price_feed):
    order_execute(order_id=_buy(agent, "1").pk)
    fixed_price_feed.price = D("110")
    sell = order_create(agent=agent, symbol="BTC/USDT", side="sell", quantity=D("1"))
    sell = order_execute(order_id=sell.pk)
    buy_fill, sell_fill = Fill.objects.order_by("id")
    expected = (sell_fill.price * 1 - sell_fill.fee) - (buy_fill.price * 1 + buy_fill.fee)
    assert sell.pnl == expected
    assert PaperOrder.objects.get(client_order_id=sell.client_order_id).pnl == expected
    assert Position.objects.get(agent=agent).quantity == 0


def test_execute_when_delivered_twice_then_one_venue_order_and_one_fill(agent, fixed_price_feed):
    order = _buy(agent)
    order_execute(order_id=order.pk)
    order_execute(order_id=order.pk)
    assert PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).count() == 1
    assert Fill.objects.filter(order=order).count() == 1
    assert Position.objects.get(agent=agent).quantity == D("0.5")


def test_apply_report_when_replayed_then_fill_counted_once(agent, fixed_price_feed):
    from trading.gateways import gateway_for

    order = order_execute(order_id=_buy(agent).pk)
    gateway = gateway_for("paper")
    report = gateway.fetch_order(order.client_order_id, order.symbol)
    order_apply_report(order_id=order.pk, report=report, gateway=gateway)
    assert Fill.objects.filter(order=order).count() == 1
    assert Order.objects.get(pk=order.pk).filled_quantity == D("0.5")


def test_execute_when_crash_left_order_submitted_then_venue_asked_before_resending(agent, fixed_price_feed):
    order = order_execute(order_id=_buy(agent).pk)
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.SUBMITTED, filled_quantity=0)
    Fill.objects.filter(order=order).delete()
    order = order_execute(order_id=order.pk)
    assert order.status == OrderStatus.EXECUTED
    assert PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).count() == 1


def test_create_when_kill_switch_active_then_rejected_with_reason(agent, fixed_price_feed):
    kill_switch_engage(mode="HALT_ONLY", reason="test halt", actor="t", source="test")
    order = _buy(agent)
    assert order.status == OrderStatus.REJECTED
    assert "kill switch active" in order.reject_reason


def test_execute_when_kill_switch_engaged_after_create_then_never_reaches_venue(agent, fixed_price_feed):
    order = _buy(agent)
    kill_switch_engage(mode="HALT_ONLY", reason="late halt", actor="t", source="test")
    order = order_execute(order_id=order.pk)
    assert order.status == OrderStatus.REJECTED
    assert not PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).exists()
    kill_switch_disengage(actor="t", source="test")
    assert order_execute(order_id=order.pk).status == OrderStatus.REJECTED  # a refusal is final


def test_execute_when_close_positions_then_only_kill_switch_reduce_only_orders_pass(agent, fixed_price_feed):
    order_execute(order_id=_buy(agent, "1").pk)
    kill_switch_engage(mode="CLOSE_POSITIONS", reason="flatten", actor="t", source="test")
    from safety.services.enforcement import kill_switch_enforce_now

    result = kill_switch_enforce_now()
    assert result.flatten_orders == 1
    flatten = Order.objects.get(origin="kill_switch")
    assert flatten.status == OrderStatus.PENDING and flatten.reduce_only
    assert order_execute(order_id=flatten.pk).status == OrderStatus.EXECUTED
    assert Position.objects.get(agent=agent).quantity == 0
    assert _buy(agent).status == OrderStatus.REJECTED


def test_create_when_quantity_invalid_then_validation_error_and_nothing_written(agent, fixed_price_feed):
    for bad in (D("0"), D("-1"), D("NaN"), D("0.000000001")):
        with pytest.raises(ValidationError) as info:
            order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=bad)
        assert info.value.field == "quantity"
    assert Order.objects.count() == 0


def test_transition_when_illegal_then_raises_and_status_unchanged(agent, fixed_price_feed):
    order = order_execute(order_id=_buy(agent).pk)
    with pytest.raises(InvalidOrderTransition):
        order_transition(order, OrderStatus.PENDING)
    assert Order.objects.get(pk=order.pk).status == OrderStatus.EXECUTED


def test_tick_when_fast_sma_above_slow_then_buys_target_exposure(agent, fixed_price_feed):
    fixed_price_feed.path = [D(p) for p in ("90", "95", "100", "105", "110")]
    fixed_price_feed.price = D("110")
    result = agent_tick(agent_id=agent.pk)
    assert len(result.order_ids) == 1
    order = Order.objects.get(pk=result.order_ids[0])
    # capital 10000 × exposure 0.5 / last close 110, rounded down to the 0.00001 step
    assert order.side == "buy" and order.quantity == D("45.45454")
    assert "hold 50% long" in order.decision_reason
    agent.refresh_from_db()
    assert "fast SMA(2)" in agent.last_decision


def test_tick_when_order_still_open_then_no_second_order(agent, fixed_price_feed):
    fixed_price_feed.path = [D(p) for p in ("90", "95", "100", "105", "110")]
    assert len(agent_tick(agent_id=agent.pk).order_ids) == 1
    assert agent_tick(agent_id=agent.pk).order_ids == []


def test_snapshot_when_position_open_then_equity_marks_to_market(agent, fixed_price_feed):
    order = order_execute(order_id=_buy(agent, "10").pk)
    fixed_price_feed.price = D("120")
    snapshot = portfolio_snapshot_take()
    position = Position.objects.get(agent=agent)
    unrealized = (D("120") - position.average_price) * position.quantity
    assert snapshot.equity == (D("10000") + unrealized).quantize(D("0.00000001"))
    assert snapshot.gross_exposure == D("1200")
    assert snapshot.positions[0]["symbol"] == "BTC/USDT"
    assert order.status == OrderStatus.EXECUTED
