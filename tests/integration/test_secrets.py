"""Exchange credentials never leak (issue 9, "Security" 3; DESIGN.md "Security").

A recognisable fake key and secret drive the ccxt gateway (real ccxt `binance`, signed requests)
against the local exchange, from this process and from a real Celery worker logging at DEBUG:
a fill, a venue reject, a 5xx retried, an authentication failure. Then everything the run
produced is searched for them: the worker's log, this process's logs and error messages, every
API answer, the admin pages, `status` and `diffsettings` output, and a pg_dump of the database.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
from decimal import Decimal

import pytest
from django.test import Client

from paper.exchange_server import Fault, LocalExchange
from tests.conftest import wait_for_worker
from tests.desk import make_role_users
from tests.factories import make_agent
from tests.helpers import manage, wait_until
from tinywindow.backup import _libpq_env, _tool
from tinywindow.exceptions import ExchangeAuthError
from trading.gateways import gateway_for
from trading.gateways.ccxt import ccxt_gateways_clear
from trading.models import Order
from trading.order_states import TERMINAL_STATUSES
from trading.services.orders import order_create, order_execute

pytestmark = pytest.mark.django_db(transaction=True)
KEY = f"TWFAKEKEY{secrets.token_hex(8)}"
SECRET = f"TWFAKESECRET{secrets.token_hex(16)}"
ORDER_PATH = "/api/v3/order"


@pytest.fixture
def exchange(settings, monkeypatch, fixed_price_feed):
    settings.EXCHANGE_RATE_LIMIT_MS = 1
    settings.EXCHANGE_TIMEOUT_MS = 1500
    monkeypatch.setenv("EXCHANGE_API_KEY", KEY)
    monkeypatch.setenv("EXCHANGE_API_SECRET", SECRET)
    for name in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_SECRET_PATH"):
        monkeypatch.delenv(name, raising=False)
    ccxt_gateways_clear()
    venue = LocalExchange(feed=fixed_price_feed)
    venue.add_api_key(api_key=KEY, secret=SECRET, account="secrets-test",
                      balances={"USDT": Decimal("100000"), "BTC": Decimal("2")})
    server = venue.serve(port=0)
    settings.EXCHANGE_API_URL = server.url
    yield venue
    server.stop()
    ccxt_gateways_clear()


def _leaks(text: str) -> list[str]:
    return [name for name, value in (("key", KEY), ("secret", SECRET)) if value in text]


def test_credentials_when_every_path_ran_then_found_nowhere(exchange, start_worker, caplog, settings, tmp_path,
                                                            worker_env, monkeypatch):
    caplog.set_level(logging.DEBUG)
    users = make_role_users()
    agent = make_agent(name="secret-keeper", exchange="binance")
    produced: dict[str, str] = {}

    # In this process: a fill, a venue reject, an authentication failure (its message included).
    filled = order_execute(order_id=order_create(agent=agent, symbol="BTC/USDT", side="buy",
                                                 quantity=Decimal("0.1"), enqueue=False).pk)
    assert filled.status == "executed"
    exchange.faults.add(Fault(mode="reject"))
    rejected = order_execute(order_id=order_create(agent=agent, symbol="BTC/USDT", side="buy",
                                                   quantity=Decimal("0.1"), enqueue=False).pk)
    assert rejected.status == "rejected"
    monkeypatch.setenv("EXCHANGE_API_SECRET", "wrong-" + SECRET[::-1])
    ccxt_gateways_clear()
    with pytest.raises(ExchangeAuthError) as refused:
        gateway_for("binance").fetch_order(filled.client_order_id, "BTC/USDT")
    produced["auth error"] = f"{refused.value!s} {refused.value!r} {refused.value.__cause__!r}"
    produced["gateway repr"] = repr(gateway_for("binance"))
    monkeypatch.setenv("EXCHANGE_API_SECRET", SECRET)
    ccxt_gateways_clear()

    # A real worker at DEBUG: a fill, then a 5xx it retries.
    worker = start_worker("execution", name="exec", concurrency=1, extra_env={
        "EXCHANGE_API_URL": settings.EXCHANGE_API_URL, "EXCHANGE_API_KEY": KEY, "EXCHANGE_API_SECRET": SECRET,
        "EXCHANGE_RATE_LIMIT_MS": "1", "EXCHANGE_TIMEOUT_MS": "1500", "LOG_LEVEL": "DEBUG"})
    wait_for_worker(worker)
    exchange.faults.add(Fault(mode="500", count=1, path=ORDER_PATH, method="POST"))
    queued = [order_create(agent=agent, symbol="BTC/USDT", side=side, quantity=Decimal("0.05")) for side in
              ("buy", "sell")]
    wait_until(lambda: not Order.objects.filter(pk__in=[o.pk for o in queued])
               .exclude(status__in=TERMINAL_STATUSES).exists(), timeout=60,
               message=f"the worker's orders final ({worker.log_path})")
    assert any(r.status == 500 for r in exchange.requests(method="POST", path=ORDER_PATH))
    assert len(exchange.requests()) > 5  # the key really was used, over HTTP

    # Every surface an operator or an attacker could read.
    client = Client(REMOTE_ADDR="203.0.113.7")
    client.force_login(users["admin"])
    for path in ("/api/orders/", "/api/fills/", "/api/agents/", f"/api/agents/{agent.pk}/", "/api/status",
                 "/api/audit/", "/api/positions/", "/api/kill-switch", "/api/circuit-breakers/",
                 "/admin/", "/admin/trading/order/", f"/admin/trading/order/{filled.pk}/change/",
                 f"/admin/trading/agent/{agent.pk}/change/", "/admin/safety/auditevent/", "/metrics", "/health"):
        response = client.get(path)
        assert response.status_code in (200, 503), (path, response.status_code)
        produced[path] = response.content.decode(errors="replace")
    for command in (("status",), ("diffsettings", "--all"), ("agents", "list")):
        run = manage(*command, env={**worker_env, "EXCHANGE_API_KEY": KEY, "EXCHANGE_API_SECRET": SECRET})
        produced[" ".join(command)] = run.stdout + run.stderr
    dump = tmp_path / "db.dump"
    subprocess.run([_tool("pg_dump"), "--format=custom", "--file", str(dump)], env=_libpq_env(), check=True)
    produced["pg_dump"] = subprocess.run([_tool("pg_restore"), "--file", "-", str(dump)], capture_output=True,
                                         text=True, check=True).stdout
    produced["worker log"] = worker.log()
    produced["this process's log"] = caplog.text

    assert "tw-" in produced["pg_dump"] and len(produced["worker log"]) > 1000  # the searches saw real output
    leaks = {where: found for where, text in produced.items() if (found := _leaks(text))}
    assert not leaks, leaks


def test_log_filter_when_a_credential_reaches_a_log_line_then_redacted(monkeypatch):
    from tinywindow.logs import REDACTED, JsonFormatter, PlainFormatter, RedactSecretsFilter, register_secret

    monkeypatch.setenv("EXCHANGE_API_KEY", KEY)
    vault_secret = f"TWVAULT{secrets.token_hex(8)}"
    register_secret(vault_secret)  # what the gateway does with credentials read from Vault
    try:
        raise RuntimeError(f"headers {{'X-MBX-APIKEY': '{KEY}'}} {vault_secret}")
    except RuntimeError:
        import sys

        record = logging.LogRecord("ccxt", logging.ERROR, __file__, 1, "sent %s and %s", (KEY, vault_secret),
                                   sys.exc_info())
    assert RedactSecretsFilter().filter(record)
    for formatter in (PlainFormatter(), JsonFormatter()):
        line = formatter.format(record)
        assert KEY not in line and vault_secret not in line and REDACTED in line, line
