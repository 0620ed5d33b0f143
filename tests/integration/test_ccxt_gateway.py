"""CcxtGateway against the local exchange: real ccxt `binance`, real HTTP on 127.0.0.1, real PostgreSQL.

The local exchange runs in a thread of this process (it must see committed rows: transactional
tests) and plays Binance, faults included. Fault → outcome:

    429 / 500 / 503 / timeout before processing   TemporaryExchangeError; order stays `submitted`;
                                                  the task's retry sends it once
    timeout after processing (answer lost)        TemporaryExchangeError; the retry finds it by client id:
                                                  one venue order
    reject (-2010)                                order `rejected` with the venue's reason
    insufficient balance (-2010)                  order `rejected`, InsufficientFunds
    bad signature (-1022)                         ExchangeAuthError; order `rejected`
"""

from __future__ import annotations

import sys
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import REGISTRY

from paper.exchange_server import Fault, LocalExchange
from paper.markets import paper_market
from paper.models import PaperVenueOrder
from paper.services.balances import paper_balances
from paper.services.matching import match_resting_orders
from tests.conftest import wait_for_worker
from tests.factories import make_agent
from tests.helpers import BackgroundProcess, wait_until
from tinywindow.embedded import find_free_port
from tinywindow.exceptions import (
    ConfigurationError,
    ExchangeAuthError,
    InsufficientFunds,
    InvalidOrder,
    TemporaryExchangeError,
)
from trading.gateways import gateway_for
from trading.gateways.base import OrderRequest
from trading.gateways.ccxt import CcxtGateway, ExchangeCredentials, ccxt_gateways_clear, exchange_credentials_load
from trading.models import Fill, Order, Position
from trading.order_states import OrderStatus
from trading.services.orders import order_cancel, order_create, order_execute

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal
API_KEY, API_SECRET = "local-test-key", "local-test-secret-0123456789"
ACCOUNT = "exchange-test"
ORDER_PATH = "/api/v3/order"


@pytest.fixture
def exchange_env(settings, monkeypatch):
    """Settings and environment that point ccxt's binance at a local exchange (URL set by `local_exchange`)."""
    settings.EXCHANGE_RATE_LIMIT_MS = 1
    settings.EXCHANGE_TIMEOUT_MS = 1500
    settings.PAPER_TRADING_MODE = True
    monkeypatch.setenv("EXCHANGE_API_KEY", API_KEY)
    monkeypatch.setenv("EXCHANGE_API_SECRET", API_SECRET)
    for name in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_SECRET_PATH"):
        monkeypatch.delenv(name, raising=False)
    ccxt_gateways_clear()
    yield settings
    ccxt_gateways_clear()


@pytest.fixture
def local_exchange(exchange_env, fixed_price_feed):
    exchange = LocalExchange(feed=fixed_price_feed)
    exchange.add_api_key(api_key=API_KEY, secret=API_SECRET, account=ACCOUNT,
                         balances={"USDT": D("100000"), "BTC": D("2")})
    server = exchange.serve(port=0)
    exchange_env.EXCHANGE_API_URL = server.url
    yield exchange
    server.stop()


@pytest.fixture
def binance_agent(local_exchange):
    return make_agent(exchange="binance")


def _order(agent, *, side="buy", quantity="0.5", order_type="market", price=None) -> Order:
    return order_create(agent=agent, symbol="BTC/USDT", side=side, quantity=D(quantity), order_type=order_type,
                        price=D(price) if price else None)


def _posts(exchange: LocalExchange) -> int:
    return len(exchange.requests(method="POST", path=ORDER_PATH))


def _api_errors(endpoint: str, kind: str) -> float:
    return REGISTRY.get_sample_value("tinywindow_api_errors_total",
                                     {"exchange": "binance", "endpoint": endpoint, "kind": kind}) or 0.0


# --- the protocol --------------------------------------------------------------------------------
def test_market_when_loaded_through_ccxt_then_matches_the_venue_precision_and_limits(local_exchange):
    gateway = gateway_for("binance")
    assert isinstance(gateway, CcxtGateway)
    for symbol in ("BTC/USDT", "XRP/USDT", "DOGE/USDT"):
        assert gateway.market(symbol) == paper_market(symbol)
    with pytest.raises(InvalidOrder):
        gateway.market("NOPE/USDT")


def test_execute_when_market_order_then_filled_over_http_with_fill_position_and_balances(binance_agent,
                                                                                         local_exchange):
    order = order_execute(order_id=_order(binance_agent).pk)
    assert order.status == OrderStatus.EXECUTED and order.filled_quantity == D("0.5")
    fill = Fill.objects.get(order=order)
    assert fill.exchange == "binance" and fill.trade_id.isdigit() and fill.liquidity == "taker"
    assert fill.price > D("100") and fill.fee == (fill.quantity * fill.price * D("0.001")).quantize(D("1e-8"))
    assert fill.fee_currency == "USDT"
    venue_order = PaperVenueOrder.objects.get(client_order_id=order.client_order_id)
    assert venue_order.account == ACCOUNT and order.venue_order_id == str(venue_order.pk)
    assert Position.objects.get(agent=binance_agent).quantity == D("0.5")
    usdt = paper_balances(account=ACCOUNT)["USDT"]
    assert usdt.free == D("100000") - fill.quantity * fill.price - fill.fee


def test_limit_when_resting_then_open_at_the_venue_and_cancel_cancels_it(binance_agent, local_exchange):
    order = order_execute(order_id=_order(binance_agent, order_type="limit", price="90").pk)
    assert order.status == OrderStatus.SUBMITTED
    report = gateway_for("binance").fetch_order(order.client_order_id, "BTC/USDT")
    assert (report.status, report.filled_quantity) == ("open", 0)
    assert paper_balances(account=ACCOUNT)["USDT"].locked > 0

    order = order_cancel(order_id=order.pk, reason="operator cancel")
    assert order.status == OrderStatus.CANCELLED
    assert PaperVenueOrder.objects.get(client_order_id=order.client_order_id).status == "cancelled"
    assert paper_balances(account=ACCOUNT)["USDT"].locked == 0
    assert local_exchange.requests(method="DELETE", path=ORDER_PATH)[-1].status == 200


def test_limit_when_market_reaches_it_then_matching_pass_fills_it_as_maker_through_ccxt(binance_agent,
                                                                                       local_exchange,
                                                                                       fixed_price_feed):
    order = order_execute(order_id=_order(binance_agent, order_type="limit", price="90").pk)
    fixed_price_feed.price = D("89")
    result = match_resting_orders()
    assert result.refreshed == [order.pk]
    order.refresh_from_db()
    assert order.status == OrderStatus.EXECUTED
    fill = Fill.objects.get(order=order)
    assert (fill.liquidity, fill.price, fill.fee) == ("maker", D("90"), D("0.5") * D("90") * D("0.0008"))
    assert local_exchange.requests(path="/api/v3/myTrades")  # the fills came from GET /api/v3/myTrades


def test_cancel_when_order_already_filled_then_reports_the_fill_not_a_cancel(binance_agent, local_exchange):
    order = order_execute(order_id=_order(binance_agent).pk)
    report = gateway_for("binance").cancel_order(order.client_order_id, "BTC/USDT")
    assert report.status == "filled" and len(report.fills) == 1


# --- faults --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, kind", [("429", "rate_limit"), ("500", "unavailable"), ("503", "unavailable"),
                                        ("timeout", "timeout")])
def test_execute_when_fault_then_temporary_error_and_the_retry_sends_it_once(binance_agent, local_exchange, mode,
                                                                           kind):
    order = _order(binance_agent)
    errors_before = _api_errors("create_order", kind)
    local_exchange.faults.add(Fault(mode=mode, path=ORDER_PATH, method="POST", delay_ms=2500))

    with pytest.raises(TemporaryExchangeError):
        order_execute(order_id=order.pk)

    assert Order.objects.get(pk=order.pk).status == OrderStatus.SUBMITTED
    assert not PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).exists()
    assert _api_errors("create_order", kind) == errors_before + 1
    order = order_execute(order_id=order.pk)  # what the task's autoretry does
    assert order.status == OrderStatus.EXECUTED
    assert PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).count() == 1


def test_execute_when_answer_lost_after_the_venue_took_the_order_then_retry_finds_it(binance_agent, local_exchange):
    order = _order(binance_agent)
    local_exchange.faults.add(Fault(mode="timeout", when="after", path=ORDER_PATH, method="POST", delay_ms=2500))

    with pytest.raises(TemporaryExchangeError):
        order_execute(order_id=order.pk)
    assert PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).count() == 1  # the venue has it

    order = order_execute(order_id=order.pk)
    assert order.status == OrderStatus.EXECUTED
    assert _posts(local_exchange) == 1  # asked by client id, never sent twice
    assert Fill.objects.filter(order=order).count() == 1


def test_execute_when_venue_rejects_then_order_rejected_with_its_reason(binance_agent, local_exchange):
    order = _order(binance_agent)
    local_exchange.faults.add(Fault(mode="reject"))
    order = order_execute(order_id=order.pk)
    assert order.status == OrderStatus.REJECTED
    assert order.reject_reason.startswith("venue refused:") and "rejected by the local exchange" in order.reject_reason
    assert order_execute(order_id=order.pk).status == OrderStatus.REJECTED  # final: no re-send
    assert _posts(local_exchange) == 1


def test_execute_when_balance_too_small_then_insufficient_funds_and_rejected(binance_agent, local_exchange):
    with pytest.raises(InsufficientFunds):
        gateway_for("binance").submit_order(OrderRequest(
            client_order_id="tw-big-1", symbol="BTC/USDT", side="buy", order_type="market", quantity=D("5000")))
    order = order_execute(order_id=_order(binance_agent, side="sell", quantity="3").pk)  # holds 2 BTC
    assert order.status == OrderStatus.REJECTED and "insufficient balance" in order.reject_reason


def test_execute_when_signature_wrong_then_authentication_error_and_order_rejected(binance_agent, local_exchange,
                                                                                  monkeypatch):
    order = _order(binance_agent)
    monkeypatch.setenv("EXCHANGE_API_SECRET", "not-the-secret")
    with pytest.raises(ExchangeAuthError):
        gateway_for("binance").fetch_order(order.client_order_id, "BTC/USDT")
    answer = local_exchange.requests(method="GET", path=ORDER_PATH)[-1]
    assert answer.status == 400  # Binance's {"code": -1022, "msg": "Signature for this request is not valid."}
    order = order_execute(order_id=order.pk)
    assert order.status == OrderStatus.REJECTED and "Signature for this request is not valid" in order.reject_reason
    assert not PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).exists()


def test_faults_when_scripted_over_http_then_served_then_cleared(local_exchange, exchange_env):
    import json
    import urllib.error
    import urllib.request

    base = exchange_env.EXCHANGE_API_URL

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, data=data, method=method), timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    assert call("POST", "/_faults", {"mode": "503", "count": 1, "path": "/api/v3/ping"})[0] == 200
    assert call("GET", "/api/v3/ping")[0] == 503
    assert call("GET", "/api/v3/ping") == (200, b"{}")
    call("POST", "/_faults", {"mode": "429", "count": None})
    status, body = call("GET", "/api/v3/time")
    assert status == 429 and json.loads(body)["code"] == -1003
    assert call("DELETE", "/_faults") == (200, b'{"faults": []}')
    assert call("GET", "/api/v3/time")[0] == 200
    assert call("POST", "/_faults", {"mode": "explode"})[0] == 400


# --- idempotency ---------------------------------------------------------------------------------
def test_execute_when_delivered_twice_then_one_exchange_order(binance_agent, local_exchange):
    order = _order(binance_agent)
    order_execute(order_id=order.pk)
    order_execute(order_id=order.pk)
    assert _posts(local_exchange) == 1
    assert PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).count() == 1
    assert Fill.objects.filter(order=order).count() == 1


def test_execute_when_crash_left_it_submitted_and_the_venue_holds_it_then_no_second_order(binance_agent,
                                                                                         local_exchange):
    order = _order(binance_agent)
    # The crashed delivery: marked submitted, sent, then died before recording anything.
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.SUBMITTED)
    gateway_for("binance").submit_order(OrderRequest(
        client_order_id=order.client_order_id, symbol="BTC/USDT", side="buy", order_type="market", quantity=D("0.5")))

    order = order_execute(order_id=order.pk)
    assert order.status == OrderStatus.EXECUTED and order.filled_quantity == D("0.5")
    assert _posts(local_exchange) == 1
    assert PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).count() == 1


def test_submit_when_client_id_already_at_venue_then_returns_that_order(local_exchange):
    gateway = gateway_for("binance")
    request = OrderRequest(client_order_id="tw-dup-1", symbol="BTC/USDT", side="buy", order_type="limit",
                           quantity=D("0.1"), price=D("90"))
    first = gateway.submit_order(request)
    second = gateway.submit_order(request)  # the venue answers "Duplicate order sent."
    assert second.venue_order_id == first.venue_order_id and second.status == "open"
    assert PaperVenueOrder.objects.filter(client_order_id="tw-dup-1").count() == 1


def test_execute_task_when_rate_limited_twice_then_worker_retries_and_sends_once(binance_agent, local_exchange,
                                                                                start_worker, exchange_env):
    worker = start_worker("execution", name="exec", concurrency=1, extra_env={
        "EXCHANGE_API_URL": exchange_env.EXCHANGE_API_URL, "EXCHANGE_RATE_LIMIT_MS": "1",
        "EXCHANGE_TIMEOUT_MS": "1500", "EXCHANGE_API_KEY": API_KEY, "EXCHANGE_API_SECRET": API_SECRET,
        "PAPER_TRADING_MODE": "true"})
    wait_for_worker(worker)
    local_exchange.faults.add(Fault(mode="429", count=2, path=ORDER_PATH, method="POST", retry_after=1))

    order = _order(binance_agent)  # enqueues execute_order on commit

    wait_until(lambda: Order.objects.get(pk=order.pk).status == OrderStatus.EXECUTED, timeout=30,
               message=f"order executed after retries ({worker.log_path})")
    statuses = [r.status for r in local_exchange.requests(method="POST", path=ORDER_PATH)]
    assert statuses == [429, 429, 200]
    assert "Retry in" in worker.log()  # Celery's autoretry, with backoff
    assert PaperVenueOrder.objects.filter(client_order_id=order.client_order_id).count() == 1


# --- configuration and credentials ---------------------------------------------------------------
def test_gateway_for_when_paper_mode_and_real_exchange_then_refused(exchange_env):
    exchange_env.EXCHANGE_API_URL = ""
    with pytest.raises(ConfigurationError, match="PAPER_TRADING_MODE is true"):
        gateway_for("binance")
    exchange_env.EXCHANGE_API_URL = "https://api.binance.com"
    with pytest.raises(ConfigurationError, match="refused"):
        gateway_for("binance")


def test_gateway_for_when_live_without_credentials_then_refused(exchange_env, monkeypatch):
    exchange_env.PAPER_TRADING_MODE = False
    monkeypatch.delenv("EXCHANGE_API_KEY")
    monkeypatch.delenv("EXCHANGE_API_SECRET")
    with pytest.raises(ConfigurationError, match="needs credentials"):
        gateway_for("kraken")
    with pytest.raises(ConfigurationError, match="unknown exchange"):
        gateway_for("no-such-exchange")


def test_gateway_when_printed_then_no_credentials_in_repr(local_exchange):
    gateway = gateway_for("binance")
    for text in (repr(gateway), str(gateway), repr(exchange_credentials_load())):
        assert API_KEY not in text and API_SECRET not in text


class _VaultKv2(BaseHTTPRequestHandler):
    """Vault's KV v2 read API (GET /v1/<path> with X-Vault-Token): Vault itself is not installable here."""

    def do_GET(self):
        if self.headers.get("X-Vault-Token") != "vault-token" or self.path != "/v1/secret/data/tinywindow/exchange":
            self.send_response(403)
            self.end_headers()
            return
        body = b'{"data": {"data": {"api_key": "vault-key", "api_secret": "vault-secret"}, "metadata": {}}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_credentials_when_only_vault_configured_then_read_through_hvac(exchange_env, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VaultKv2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv("EXCHANGE_API_KEY")
        monkeypatch.delenv("EXCHANGE_API_SECRET")
        monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("VAULT_TOKEN", "vault-token")
        monkeypatch.setenv("VAULT_SECRET_PATH", "secret/data/tinywindow/exchange")
        credentials = exchange_credentials_load()
        assert (credentials.api_key, credentials.secret, credentials.source) == ("vault-key", "vault-secret", "vault")
        assert "vault-secret" not in repr(credentials)
        ccxt_gateways_clear()
        monkeypatch.setenv("VAULT_TOKEN", "wrong")
        with pytest.raises(ConfigurationError, match="Vault") as info:
            exchange_credentials_load()
        assert "wrong" not in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


def test_exchange_server_command_when_started_then_serves_binance_dialect(worker_env, tmp_path):
    port = find_free_port()
    env = {**worker_env, "EXCHANGE_API_KEY": API_KEY, "EXCHANGE_API_SECRET": API_SECRET}
    proc = BackgroundProcess([sys.executable, "manage.py", "exchange_server", "--port", str(port)], env=env,
                             log_path=tmp_path / "exchange.log")
    try:
        wait_until(lambda: f"http://127.0.0.1:{port}" in proc.log(), timeout=30, message="exchange server up")
        gateway = CcxtGateway("binance", credentials=ExchangeCredentials(API_KEY, API_SECRET),
                              api_url=f"http://127.0.0.1:{port}", rate_limit_ms=1, timeout_ms=5000)
        assert gateway.market("ETH/USDT") == paper_market("ETH/USDT")
        report = gateway.submit_order(OrderRequest(client_order_id="tw-cmd-1", symbol="ETH/USDT", side="buy",
                                                   order_type="market", quantity=D("0.01")))
        assert report.status == "filled" and report.fills
    finally:
        proc.stop()
    assert "Local exchange stopped." in proc.log()
