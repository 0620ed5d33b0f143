"""The paper venue's realism: maker/taker fees, resting limits, partial fills, balances, latency.

Orders go through the same services production uses (order_create → order_execute, and the
matching pass `match_resting_orders`), against real PostgreSQL; the feed's price is pinned by
the `fixed_price_feed` fixture (100, 1000 units of volume per candle unless a test says).
"""

import time
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paper.models import PaperBalance, PaperOrder, PaperVenueOrder
from paper.services.balances import paper_account_seed, paper_balances
from paper.services.matching import match_resting_orders
from paper.venue import PaperVenue
from tests.factories import FixedPriceFeed
from trading.gateways.base import OrderRequest, venue_account
from trading.models import Fill, Order, Position
from trading.order_states import OrderStatus
from trading.services.orders import order_cancel, order_create, order_execute

pytestmark = pytest.mark.django_db
D = Decimal
FEE = D("0.00000001")


def _order(agent, side="buy", quantity="1", order_type="market", price=None):
    order = order_create(agent=agent, symbol="BTC/USDT", side=side, quantity=D(quantity), order_type=order_type,
                         price=D(price) if price else None)
    return order_execute(order_id=order.pk)


def _balance(agent, asset) -> PaperBalance:
    return paper_balances(account=venue_account(agent.pk))[asset]


def test_limit_when_price_later_crosses_then_filled_as_maker_at_limit_with_maker_fee(agent, fixed_price_feed):
    order = _order(agent, order_type="limit", price="95")
    assert order.status == OrderStatus.SUBMITTED  # rests: the market (100) is above the bid
    assert not PaperOrder.objects.exists()
    assert _balance(agent, "USDT").locked == (D("95") * D("1.001")).quantize(FEE)  # held at the taker rate

    fixed_price_feed.price = D("94")
    result = match_resting_orders()

    order.refresh_from_db()
    assert result.refreshed == [order.pk]
    assert order.status == OrderStatus.EXECUTED
    fill = Fill.objects.get(order=order)
    assert (fill.liquidity, fill.price, fill.fee) == ("maker", D("95"), (D("95") * D("0.0008")).quantize(FEE))
    trade = PaperOrder.objects.get(client_order_id=order.client_order_id)
    assert trade.liquidity == "maker" and trade.pnl == 0  # the order service wrote the PnL back
    assert Position.objects.get(agent=agent).quantity == D("1")
    usdt = _balance(agent, "USDT")
    assert (usdt.free, usdt.locked) == (D("10000") - D("95") - fill.fee, 0)
    assert _balance(agent, "BTC").free == D("1")


def test_limit_when_crossing_at_submission_then_taker_at_no_worse_than_limit(agent, fixed_price_feed):
    order = _order(agent, order_type="limit", price="105")
    assert order.status == OrderStatus.EXECUTED
    fill = Fill.objects.get(order=order)
    assert fill.liquidity == "taker" and D("100") < fill.price <= D("105")
    assert fill.fee == (fill.price * D("0.001")).quantize(FEE)


def test_match_when_price_not_reached_then_order_keeps_resting(agent, fixed_price_feed):
    order = _order(agent, side="buy", order_type="limit", price="95")
    fixed_price_feed.price = D("96")
    assert match_resting_orders().refreshed == []
    assert Order.objects.get(pk=order.pk).status == OrderStatus.SUBMITTED


def test_market_when_larger_than_volume_share_then_partial_fills_until_complete(agent, fixed_price_feed):
    fixed_price_feed.volume = D("10")  # one pass takes at most 10 % of it: 1 BTC
    order = _order(agent, quantity="2.5")
    assert (order.status, order.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, D("1"))

    match_resting_orders()
    assert Order.objects.get(pk=order.pk).filled_quantity == D("2")
    match_resting_orders()

    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (OrderStatus.EXECUTED, D("2.5"))
    fills = list(Fill.objects.filter(order=order).order_by("id"))
    assert [f.quantity for f in fills] == [D("1"), D("1"), D("0.5")]
    assert {f.liquidity for f in fills} == {"taker"}
    assert PaperOrder.objects.filter(client_order_id=order.client_order_id).count() == 3
    assert Position.objects.get(agent=agent).quantity == D("2.5")
    assert _balance(agent, "USDT").locked == 0  # what the order held beyond its cost is free again


def test_partial_when_cancelled_then_keeps_its_fills_and_releases_the_rest(agent, fixed_price_feed):
    fixed_price_feed.volume = D("10")
    order = _order(agent, quantity="3")
    order = order_cancel(order_id=order.pk, reason="operator")
    assert (order.status, order.filled_quantity) == (OrderStatus.CANCELLED, D("1"))
    usdt = _balance(agent, "USDT")
    assert usdt.locked == 0
    assert usdt.free == D("10000") - sum(f.quantity * f.price + f.fee for f in Fill.objects.filter(order=order))


def test_buy_when_balance_cannot_cover_then_rejected_with_reason_and_nothing_held(agent, fixed_price_feed):
    order = _order(agent, quantity="200")  # 20 000 USDT of BTC for a 10 000 USDT agent
    assert order.status == OrderStatus.REJECTED
    assert "insufficient balance" in order.reject_reason and "USDT" in order.reject_reason
    assert not Fill.objects.exists()
    usdt = _balance(agent, "USDT")
    assert (usdt.free, usdt.locked) == (D("10000"), 0)


def test_sell_when_no_base_held_then_rejected_insufficient_funds(agent, fixed_price_feed):
    order = _order(agent, side="sell", quantity="0.1")
    assert order.status == OrderStatus.REJECTED
    assert "insufficient balance" in order.reject_reason and "BTC" in order.reject_reason


def test_cancel_when_limit_resting_then_cancelled_and_hold_released(agent, fixed_price_feed):
    order = _order(agent, order_type="limit", price="90", quantity="2")
    assert _balance(agent, "USDT").locked > 0
    order = order_cancel(order_id=order.pk, reason="test")
    assert order.status == OrderStatus.CANCELLED
    usdt = _balance(agent, "USDT")
    assert (usdt.free, usdt.locked) == (D("10000"), 0)
    fixed_price_feed.price = D("80")
    match_resting_orders()
    assert not PaperOrder.objects.exists()  # a cancelled order never trades


def test_balances_when_sequence_of_trades_then_quote_spent_is_cost_plus_fees(agent, fixed_price_feed):
    _order(agent, quantity="1")
    _order(agent, order_type="limit", price="98", quantity="0.5")
    fixed_price_feed.price = D("97")
    match_resting_orders()
    fixed_price_feed.price = D("103")
    _order(agent, side="sell", quantity="0.7")
    _order(agent, side="sell", order_type="limit", price="110", quantity="0.3")  # rests, holds 0.3 BTC

    fills = list(Fill.objects.all())
    bought = sum(f.quantity * f.price + f.fee for f in fills if f.side == "buy")
    sold = sum(f.quantity * f.price - f.fee for f in fills if f.side == "sell")
    usdt, btc = _balance(agent, "USDT"), _balance(agent, "BTC")
    assert usdt.free + usdt.locked == D("10000") - bought + sold
    assert usdt.locked == 0
    assert (btc.free, btc.locked) == (D("0.5"), D("0.3"))
    assert btc.free + btc.locked == Position.objects.get(agent=agent).quantity


def test_account_when_agent_traded_before_balances_existed_then_funded_from_its_books(agent, fixed_price_feed):
    Position.objects.create(agent=agent, symbol="BTC/USDT", quantity=D("2"), average_price=D("90"),
                            realized_pnl=D("15"))
    order = _order(agent, side="sell", quantity="2")
    assert order.status == OrderStatus.EXECUTED
    fill = Fill.objects.get(order=order)
    # cash = capital + realized - cost of the open position, then the sale's proceeds
    assert _balance(agent, "USDT").free == D("10000") + D("15") - D("180") + fill.quantity * fill.price - fill.fee


def test_venue_when_latency_configured_then_each_call_takes_that_long(db):
    venue = PaperVenue(feed=FixedPriceFeed(price=D("100")), latency_ms=60)
    paper_account_seed(account="slow", balances={"USDT": D("1000")})
    started = time.perf_counter()
    report = venue.submit(OrderRequest(client_order_id="slow-1", symbol="BTC/USDT", side="buy", order_type="market",
                                       quantity=D("1"), account="slow"), now=_now())
    assert time.perf_counter() - started >= 0.06
    assert report.status == "filled"


def test_bootstrap_when_run_then_matching_pass_scheduled_on_execution_queue(db):
    from django_celery_beat.models import PeriodicTask

    from tinywindow.bootstrap import bootstrap

    bootstrap(demo_agents=False)
    task = PeriodicTask.objects.get(name="paper-matching")
    assert (task.task, task.queue, task.interval.every) == ("paper.tasks.match_resting_orders", "execution", 1)


def _now():
    from django.utils import timezone

    return timezone.now()


# --- property: whatever happens, the books balance -------------------------------------------------
order_steps = st.lists(
    st.tuples(
        st.sampled_from(["buy", "sell"]),
        st.sampled_from(["market", "limit"]),
        st.integers(min_value=1, max_value=40),  # quantity in 0.1 BTC
        st.integers(min_value=-5, max_value=5),  # limit price offset from the market
        st.integers(min_value=-6, max_value=6),  # market move after the order
        st.booleans(),  # cancel it afterwards
    ),
    min_size=1, max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=order_steps)
def test_venue_property_when_any_orders_then_balances_match_trades_and_holds(db, steps):
    feed = FixedPriceFeed(price=D("100"), volume=D("20"))  # 2 BTC per pass: partial fills happen
    venue = PaperVenue(feed=feed, latency_ms=0)
    account = f"prop-{uuid.uuid4().hex[:12]}"
    paper_account_seed(account=account, balances={"USDT": D("2000"), "BTC": D("3")})
    for n, (side, kind, tenths, offset, move, cancel) in enumerate(steps):
        request = OrderRequest(client_order_id=f"{account}-{n}", symbol="BTC/USDT", side=side, order_type=kind,
                               quantity=D(tenths) / 10, price=feed.price + offset if kind == "limit" else None,
                               account=account)
        venue.submit(request, now=_now())
        feed.price = max(D("50"), feed.price + move)
        venue.match_open_orders(now=_now())
        if cancel:
            venue.cancel(request.client_order_id)

    balances = paper_balances(account=account)
    trades = list(PaperOrder.objects.filter(account=account))
    spent = sum((t.quantity * t.price + t.fee for t in trades if t.side == "buy"), D(0))
    earned = sum((t.quantity * t.price - t.fee for t in trades if t.side == "sell"), D(0))
    bought = sum((t.quantity for t in trades if t.side == "buy"), D(0))
    sold = sum((t.quantity for t in trades if t.side == "sell"), D(0))
    usdt, btc = balances["USDT"], balances["BTC"]
    assert usdt.free + usdt.locked == D("2000") - spent + earned
    assert btc.free + btc.locked == D("3") + bought - sold
    assert min(usdt.free, usdt.locked, btc.free, btc.locked) >= 0
    open_orders = PaperVenueOrder.objects.filter(account=account, status="open")
    for asset, balance in balances.items():
        assert balance.locked == sum((o.locked_amount for o in open_orders if o.locked_asset == asset), D(0))
    for venue_order in PaperVenueOrder.objects.filter(account=account):
        assert venue_order.filled_quantity == sum((t.quantity for t in venue_order.trades.all()), D(0))
        assert venue_order.filled_quantity <= venue_order.quantity


def test_lock_accounts_when_new_accounts_and_assets_then_funded_created_locked_with_a_fixed_number_of_queries(db):
    """A batch of orders in a market its accounts never traded (the group commit's case): the
    missing rows are made together, not account by account, and every row comes back locked."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from paper.services.balances import balances_lock_accounts

    old = [f"old-{i}" for i in range(20)]
    for account in old:
        paper_account_seed(account=account, balances={"USDT": D("100")})
    paper_account_seed(account="both", balances={"USDT": D("5"), "BTC": D("1")})
    funded: list[str] = []

    def funding(account: str) -> dict[str, Decimal]:
        funded.append(account)
        return {"USDT": D("1000")}

    wanted = {account: {"BTC", "USDT"} for account in [*old, "both", "new-a", "new-b"]}
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        books = balances_lock_accounts(wanted, funding=funding)
    rows = {(account, asset): (b.free, b.locked) for account, book in books.items() for asset, b in book.rows.items()}
    assert rows == {**{(a, "USDT"): (D("100"), 0) for a in old}, **{(a, "BTC"): (0, 0) for a in old},
                    ("both", "USDT"): (D("5"), 0), ("both", "BTC"): (D("1"), 0),
                    **{(a, "USDT"): (D("1000"), 0) for a in ("new-a", "new-b")},
                    **{(a, "BTC"): (0, 0) for a in ("new-a", "new-b")}}
    assert sorted(funded) == ["new-a", "new-b"]  # only accounts that did not exist are funded
    assert PaperBalance.objects.filter(account__in=wanted).count() == 2 * len(wanted)
    locks = [q["sql"] for q in queries if q["sql"].rstrip().endswith("FOR UPDATE")]
    assert len(locks) == 2  # what existed, then what was made: one statement each
    # Twenty accounts missing an asset cost what two new accounts cost, not a round trip each.
    seeding = [q for q in queries if "paper_accounts" in q["sql"] and "INSERT" in q["sql"]]
    assert len(seeding) == 2
    assert len(queries) - len(seeding) * 5 < 10, [q["sql"][:80] for q in queries]
