"""Reconciliation against real venues, and reduce-only enforcement.

The paper venue in-process, the local exchange (ccxt's `binance` over HTTP on 127.0.0.1, in a
thread of this process: transactional tests, so it sees committed rows), and one real Celery
worker for the start-up run. Crashes are simulated by leaving the rows as the crash would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.request
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from paper.exchange_server import LocalExchange
from paper.models import PaperVenueOrder
from safety.models import AuditEvent
from safety.services.kill_switch import kill_switch_engage
from tests.conftest import wait_for_worker
from tests.factories import make_agent
from tests.helpers import wait_until
from trading.gateways import gateway_for
from trading.gateways.base import venue_account
from trading.gateways.ccxt import ccxt_gateways_clear
from trading.models import Fill, Order, OrderOrigin, Position
from trading.order_states import OrderStatus
from trading.services.orders import REDUCE_ONLY_REFUSAL, order_create, order_execute, order_request
from trading.services.reconcile import reconcile_run

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal
API_KEY, API_SECRET = "reconcile-test-key", "reconcile-test-secret-0123456789"
ACCOUNT = "reconcile-test"
LATER = timedelta(seconds=120)  # past RECONCILE_STALE_SECONDS: trades and lost orders are judged


@pytest.fixture
def local_exchange(settings, monkeypatch, fixed_price_feed):
    settings.EXCHANGE_RATE_LIMIT_MS = 1
    settings.EXCHANGE_TIMEOUT_MS = 3000
    monkeypatch.setenv("EXCHANGE_API_KEY", API_KEY)
    monkeypatch.setenv("EXCHANGE_API_SECRET", API_SECRET)
    for name in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_SECRET_PATH"):
        monkeypatch.delenv(name, raising=False)
    ccxt_gateways_clear()
    exchange = LocalExchange(feed=fixed_price_feed)
    # Cash only: every BTC the account holds is one the positions must account for.
    exchange.add_api_key(api_key=API_KEY, secret=API_SECRET, account=ACCOUNT, balances={"USDT": D("100000")})
    server = exchange.serve(port=0)
    settings.EXCHANGE_API_URL = server.url
    yield server
    server.stop()
    ccxt_gateways_clear()


def _signed(base_url: str, method: str, path: str, params: dict[str, str]) -> dict:
    """A request signed with the account's key the way Binance wants it — not through TinyWindow."""
    query = urlencode({**params, "timestamp": str(int(time.time() * 1000))})
    signature = hmac.new(API_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"{base_url}{path}?{query}&signature={signature}", method=method,
                                     headers={"X-MBX-APIKEY": API_KEY})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def _buy(agent, quantity: str = "0.5", **kwargs) -> Order:
    return order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D(quantity), **kwargs)


def _audits(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("pk"))


def _queued_webhooks(redis_client) -> list[dict]:
    """The webhook tasks waiting on the `safety` queue (Celery's JSON messages in the Redis list)."""
    messages = [json.loads(raw) for raw in redis_client.lrange("safety", 0, -1)]
    return [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages
            if m["headers"]["task"] == "safety.tasks.send_webhook"]


# --- orders --------------------------------------------------------------------------------------
def test_reconcile_when_submitted_order_filled_at_venue_unrecorded_then_executed_with_its_fill(local_exchange):
    agent = make_agent(exchange="binance")
    order = _buy(agent, enqueue=False)
    # The crash: marked submitted, sent, filled at the venue, and the worker died before recording it.
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.SUBMITTED, submitted_at=timezone.now())
    gateway_for("binance").submit_order(order_request(order))
    assert not Fill.objects.filter(order=order).exists()

    report = reconcile_run(exchanges=["binance"], now=timezone.now() + LATER)

    order.refresh_from_db()
    assert (order.status, order.filled_quantity, order.venue_order_id) == (
        OrderStatus.EXECUTED, D("0.5"), str(PaperVenueOrder.objects.get(client_order_id=order.client_order_id).pk))
    assert Fill.objects.get(order=order).quantity == D("0.5")
    assert Position.objects.get(agent=agent).quantity == D("0.5")
    assert (report.orders_refreshed, report.unconfirmed_mismatches, report.unknown_trades, report.errors) == (
        1, 0, [], [])
    again = reconcile_run(exchanges=["binance"], now=timezone.now() + LATER)
    assert (again.orders_refreshed, Fill.objects.count()) == (0, 1)


def test_reconcile_when_paper_orders_filled_at_venue_unrecorded_then_executed_after_one_bulk_fetch(
        agent, fixed_price_feed):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    orders = [_buy(agent, "0.1", enqueue=False) for _ in range(3)]
    for order in orders:  # the crash, as above, on the paper venue
        Order.objects.filter(pk=order.pk).update(status=OrderStatus.SUBMITTED, submitted_at=timezone.now())
        gateway_for("paper").submit_order(order_request(order))

    with CaptureQueriesContext(connection) as queries:
        report = reconcile_run(now=timezone.now() + LATER)

    assert [Order.objects.get(pk=o.pk).status for o in orders] == [OrderStatus.EXECUTED] * 3
    assert Fill.objects.filter(order__in=orders).count() == 3
    assert Position.objects.get(agent=agent).quantity == D("0.3")
    assert (report.orders_refreshed, report.errors) == (3, [])
    asked = [q["sql"] for q in queries if '"paper_venue_orders"."client_order_id"' in q["sql"]
             and "FOR UPDATE" not in q["sql"]]
    assert len(asked) == 1 and " IN (" in asked[0], asked  # the three orders in one fetch


def test_reconcile_when_venue_holds_orders_as_booked_then_no_lock_and_same_statements_for_more(
        agent, fixed_price_feed):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def resting(count: int) -> None:  # limit buys below the market (100): open at the venue, unfilled
        for _ in range(count):
            order_execute(order_id=_buy(agent, "0.1", order_type="limit", price=D("97"), enqueue=False).pk)

    def statements() -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            report = reconcile_run(now=timezone.now() + LATER)
        assert (report.orders_refreshed, report.errors) == (0, [])
        return [q["sql"] for q in queries]

    resting(2)
    few = statements()
    resting(6)
    many = statements()
    assert Order.objects.filter(status=OrderStatus.SUBMITTED).count() == 8
    assert len(many) == len(few), (few, many)
    assert not [sql for sql in many if "FOR UPDATE" in sql]  # nothing to apply: no order locked


def test_engine_start_when_pending_order_was_never_enqueued_then_reconcile_sends_it(agent, start_worker):
    lost = _buy(agent, "0.01", enqueue=False)  # committed, then the process died before the enqueue
    Order.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(seconds=90))
    fresh = _buy(agent, "0.01", enqueue=False)  # younger than RECONCILE_STALE_SECONDS: may still be on its way

    # One order per delivery: with group commit the lost order's delivery would also send the fresh
    # one (as its own delivery would), and this test is about what reconciliation picks.
    worker = start_worker("execution", name="engine", concurrency=1, extra_env={"EXECUTION_BATCH_MAX": "1"})
    wait_for_worker(worker)

    wait_until(lambda: Order.objects.get(pk=lost.pk).status == OrderStatus.EXECUTED, timeout=30,
               message=f"lost order executed after the engine's start-up reconcile ({worker.log_path})")
    assert PaperVenueOrder.objects.filter(client_order_id=lost.client_order_id).count() == 1
    wait_until(lambda: "reconcile: 0 orders refreshed, 1 re-enqueued, 0 expired" in worker.log(), timeout=10,
               message="reconcile report logged")
    assert Order.objects.get(pk=fresh.pk).status == OrderStatus.PENDING


def test_reconcile_when_submitted_order_never_reached_the_venue_then_sent_again(agent, fixed_price_feed,
                                                                                redis_client):
    order = _buy(agent, enqueue=False)
    # The crash: marked submitted (committed), then the worker died before the send.
    marked = timezone.now() - timedelta(seconds=90)
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.SUBMITTED, submitted_at=marked, created_at=marked)
    redis_client.delete("execution")

    report = reconcile_run(exchanges=["paper"])

    assert (report.orders_reenqueued, report.orders_refreshed) == (1, 0)
    message = json.loads(redis_client.lindex("execution", 0))
    assert (message["headers"]["task"], message["headers"]["argsrepr"]) == ("trading.tasks.execute_order",
                                                                         f"({order.pk},)")
    assert order_execute(order_id=order.pk).status == OrderStatus.EXECUTED  # what the worker does with it
    assert PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).count() == 1


def test_reconcile_when_lost_order_older_than_max_age_then_expired_not_sent(agent, fixed_price_feed):
    stale = _buy(agent, enqueue=False)
    Order.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(seconds=900))

    report = reconcile_run(exchanges=["paper"])

    stale.refresh_from_db()
    assert (report.orders_expired, report.orders_reenqueued) == (1, 0)
    assert stale.status == OrderStatus.EXPIRED and "expired, not sent late" in stale.reject_reason
    assert not PaperVenueOrder.objects.filter(client_order_id=stale.client_order_id).exists()


def test_reconcile_when_kill_switch_flattening_order_lost_then_sent_whatever_its_age(agent, fixed_price_feed,
                                                                                    redis_client):
    order_execute(order_id=_buy(agent).pk)
    kill_switch_engage(mode="CLOSE_POSITIONS", reason="reconcile test", actor="t", source="test")
    flatten = order_create(agent=agent, symbol="BTC/USDT", side="sell", quantity=D("0.5"), reduce_only=True,
                           origin=OrderOrigin.KILL_SWITCH, enqueue=False)
    Order.objects.filter(pk=flatten.pk).update(created_at=timezone.now() - timedelta(seconds=900))
    redis_client.delete("execution")

    report = reconcile_run(exchanges=["paper"])

    assert (report.orders_reenqueued, report.orders_expired) == (1, 0)
    assert Order.objects.get(pk=flatten.pk).status == OrderStatus.PENDING  # now waiting for a worker
    message = json.loads(redis_client.lindex("execution", 0))
    assert (message["headers"]["task"], message["headers"]["argsrepr"]) == ("trading.tasks.execute_order",
                                                                         f"({flatten.pk},)")


# --- positions against balances ------------------------------------------------------------------
def test_reconcile_when_position_differs_from_paper_balance_then_alert_once_and_position_kept(
        agent, fixed_price_feed, settings, redis_client):
    settings.WEBHOOK_URL = "http://127.0.0.1:9/hook"  # queued only: no worker consumes `safety` here
    order_execute(order_id=_buy(agent).pk)
    assert reconcile_run(exchanges=["paper"]).mismatches == []

    Position.objects.filter(agent=agent).update(quantity=D("0.7"))  # the books went wrong somehow
    first = reconcile_run(exchanges=["paper"])
    assert (first.mismatches, first.unconfirmed_mismatches, _audits("reconcile_mismatch")) == ([], 1, [])
    report = reconcile_run(exchanges=["paper"])  # the same difference again: not a fill in flight

    [mismatch] = report.mismatches
    assert (mismatch.account, mismatch.asset, mismatch.expected, mismatch.actual) == (
        venue_account(agent.pk), "BTC", D("0.7"), D("0.5"))
    [entry] = _audits("reconcile_mismatch")
    assert (entry.actor, entry.target) == ("reconciler", f"paper {venue_account(agent.pk)} BTC")
    assert (entry.details["expected"], entry.details["actual"], entry.details["difference"]) == ("0.7", "0.5", "-0.2")
    assert Position.objects.get(agent=agent).quantity == D("0.7")  # never corrected by the reconciler
    [hook] = [h for h in _queued_webhooks(redis_client) if h["event"] == "reconcile.mismatch"]
    assert (hook["asset"], hook["difference"]) == ("BTC", "-0.2")

    assert len(reconcile_run(exchanges=["paper"]).mismatches) == 1  # still wrong: reported, not re-audited
    assert len(_audits("reconcile_mismatch")) == 1

    Position.objects.filter(agent=agent).update(quantity=D("0.50001"))  # within one amount step (0.00001)
    assert reconcile_run(exchanges=["paper"]).mismatches == []
    [resolved] = _audits("reconcile_resolved")
    assert resolved.target == entry.target


# --- trades we did not place ---------------------------------------------------------------------
def test_reconcile_when_someone_else_trades_on_the_account_then_unauthorized_trade_audited(local_exchange):
    agent = make_agent(exchange="binance")
    ours = order_execute(order_id=_buy(agent, "0.2").pk)
    assert ours.status == OrderStatus.EXECUTED
    intruder = _signed(local_exchange.url, "POST", "/api/v3/order", {
        "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.1",
        "newClientOrderId": "not-tinywindow-1"})
    assert intruder["status"] == "FILLED"

    report = reconcile_run(now=timezone.now() + LATER)  # default venues: binance has agents

    [unknown] = report.unknown_trades
    assert (unknown.exchange, unknown.trade.venue_order_id, unknown.trade.side, unknown.trade.quantity) == (
        "binance", str(intruder["orderId"]), "buy", D("0.1"))
    [entry] = _audits("unauthorized_trade")
    assert entry.actor == "reconciler" and entry.target == f"binance trade {unknown.trade.trade_id}"
    assert (entry.details["symbol"], entry.details["quantity"]) == ("BTC/USDT", "0.1")
    assert report.unconfirmed_mismatches == 1  # the position check sees the same intrusion, confirmed next run

    again = reconcile_run(now=timezone.now() + LATER)
    assert len(again.unknown_trades) == 1 and len(_audits("unauthorized_trade")) == 1  # one alert per trade
    [mismatch] = again.mismatches
    assert (mismatch.account, mismatch.expected, mismatch.actual) == ("", D("0.2"), D("0.3"))  # 0.1 BTC too many


def test_reconcile_when_trade_younger_than_the_settling_time_then_not_judged_yet(local_exchange):
    make_agent(exchange="binance")
    _signed(local_exchange.url, "POST", "/api/v3/order", {
        "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.1"})
    assert reconcile_run().unknown_trades == []  # an order in flight trades before it is recorded


# --- reduce-only ---------------------------------------------------------------------------------
def _rejects(kind: str) -> float:
    return REGISTRY.get_sample_value("tinywindow_order_rejects_total", {"reason": kind}) or 0.0


@pytest.mark.parametrize("held, side, quantity", [
    ("0", "sell", "0.1"),  # no position: anything opens one
    ("1", "buy", "0.1"),  # same side as the long
    ("1", "sell", "1.5"),  # larger than the long: it would flip to a short
    ("-1", "sell", "0.1"),  # same side as the short
    ("-1", "buy", "2"),  # larger than the short
])
def test_create_when_reduce_only_would_increase_the_position_then_rejected(agent, fixed_price_feed, held, side,
                                                                          quantity):
    Position.objects.create(agent=agent, symbol="BTC/USDT", quantity=D(held), average_price=D("100"))
    rejects = _rejects("risk_limit")
    order = order_create(agent=agent, symbol="BTC/USDT", side=side, quantity=D(quantity), reduce_only=True)
    assert order.status == OrderStatus.REJECTED and order.reject_reason.startswith(REDUCE_ONLY_REFUSAL)
    assert order.pk is not None and _rejects("risk_limit") == rejects + 1  # stored and counted like any refusal


@pytest.mark.parametrize("held, side, quantity", [("1", "sell", "0.4"), ("1", "sell", "1"), ("-1", "buy", "1")])
def test_create_when_reduce_only_reduces_the_position_then_pending(agent, fixed_price_feed, held, side, quantity):
    Position.objects.create(agent=agent, symbol="BTC/USDT", quantity=D(held), average_price=D("100"))
    order = order_create(agent=agent, symbol="BTC/USDT", side=side, quantity=D(quantity), reduce_only=True,
                         enqueue=False)
    assert order.status == OrderStatus.PENDING


def test_schedule_when_bootstrapped_then_reconcile_every_minute_on_the_execution_queue(db):
    from django_celery_beat.models import PeriodicTask

    from tinywindow.bootstrap import bootstrap
    from tinywindow.celery import app

    bootstrap(demo_agents=False)
    task = PeriodicTask.objects.get(name="reconcile")
    assert (task.task, task.queue, task.interval.every) == ("trading.tasks.reconcile", "execution", 60)
    assert app.amqp.router.route({}, "trading.tasks.reconcile")["queue"].name == "execution"
