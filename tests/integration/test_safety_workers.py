"""The safety system with real Celery worker processes, real PostgreSQL and real Redis.

- activation while 50 orders sit queued on `execution`: none reaches the venue afterwards;
- CLOSE_POSITIONS with 100 open positions across agents: all flat, and the events tell it;
- engine worker and Redis killed and restarted: the kill switch is still active;
- FLUSHDB while active: no order slips through, and the mirror comes back by itself;
- webhook notifications retried with backoff, never blocking the activation.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from celery import Celery
from django.test import Client

from paper.models import PaperVenueOrder
from safety.models import KillSwitchEvent
from safety.services.kill_switch import kill_switch_engage
from tests.conftest import wait_for_worker
from tests.factories import make_agent
from tests.helpers import wait_until
from tinywindow.embedded import find_free_port, start_redis
from tinywindow.redis_client import KILL_SWITCH_ACTIVE_KEY, get_redis, reset_redis_client
from trading.models import Order, Position
from trading.order_states import TERMINAL_STATUSES
from trading.services.orders import order_create, order_execute

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "LTC/USDT"]


def _all_final(ids) -> bool:
    return not Order.objects.filter(pk__in=list(ids)).exclude(status__in=TERMINAL_STATUSES).exists()


def test_activation_when_50_orders_queued_then_none_reaches_the_venue(agent, start_worker):
    orders = [order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("0.001")) for _ in range(50)]
    assert all(o.status == "pending" for o in orders)  # all 50 sit queued: no worker yet
    response = Client(REMOTE_ADDR="127.0.0.1").post(
        "/api/kill-switch", {"mode": "HALT_ONLY", "reason": "queued orders test"}, content_type="application/json")
    assert response.status_code == 200
    wait_for_worker(start_worker("safety,execution", name="engine"))
    wait_until(lambda: _all_final(o.pk for o in orders), timeout=60, message="50 orders final")
    assert PaperVenueOrder.objects.count() == 0
    assert set(Order.objects.values_list("status", flat=True)) <= {"rejected", "cancelled"}


def test_activation_when_orders_flowing_then_nothing_reaches_the_venue_after_the_response(agent, start_worker):
    wait_for_worker(start_worker("safety,execution", name="engine"))
    orders = [order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("0.001")) for _ in range(50)]
    response = Client(REMOTE_ADDR="127.0.0.1").post(
        "/api/kill-switch", {"mode": "HALT_ONLY", "reason": "mid-flow"}, content_type="application/json")
    responded_at = datetime.now(UTC)
    assert response.status_code == 200
    wait_until(lambda: _all_final(o.pk for o in orders), timeout=60, message="50 orders final")
    assert not PaperVenueOrder.objects.filter(created_at__gt=responded_at).exists()


def test_close_positions_when_100_positions_open_then_all_flat_and_events_tell_the_story(start_worker):
    from django.utils import timezone

    from trading.feeds import feed_for

    agents = [make_agent(symbols=SYMBOLS, capital=D("100000")) for _ in range(20)]
    prices = {s: feed_for("synthetic").last_price(s, timezone.now()) for s in SYMBOLS}
    for agent in agents:
        for symbol in SYMBOLS:
            quantity = D("20") / prices[symbol]  # about 20 USDT each: above every market minimum
            order = order_create(agent=agent, symbol=symbol, side="buy", quantity=quantity)
            assert order_execute(order_id=order.pk).status == "executed", order.reject_reason
    assert Position.objects.exclude(quantity=0).count() == 100
    wait_for_worker(start_worker("safety,execution", name="engine", concurrency=2))
    response = Client(REMOTE_ADDR="127.0.0.1").post(
        "/api/kill-switch", {"mode": "CLOSE_POSITIONS", "reason": "Market crash"}, content_type="application/json")
    assert response.status_code == 200
    wait_until(lambda: not Position.objects.exclude(quantity=0).exists(), timeout=90, interval=0.5,
               message="every position flat")
    flatten = Order.objects.filter(origin="kill_switch")
    assert flatten.count() == 100 and set(flatten.values_list("status", flat=True)) == {"executed"}
    assert all(o.reduce_only and "Market crash" in o.decision_reason for o in flatten)
    event = KillSwitchEvent.objects.get()
    assert (event.action, event.mode, event.reason, event.source) == ("activate", "CLOSE_POSITIONS", "Market crash",
                                                                       "127.0.0.1")
    # New strategy orders are still refused while it is active.
    assert order_create(agent=agents[0], symbol="BTC/USDT", side="buy", quantity=D("0.01")).status == "rejected"


def test_flushdb_when_kill_switch_active_then_no_order_slips_and_mirror_returns(agent, start_worker):
    wait_for_worker(start_worker("safety,execution", name="engine", health_port=find_free_port()))
    kill_switch_engage(mode="HALT_ONLY", reason="flush test", actor="t", source="test")
    pending = Order.objects.create(client_order_id="tw-flush-1", agent=agent, exchange="paper", mode="paper",
                                   symbol="BTC/USDT", side="buy", quantity=D("0.001"))
    get_redis().flushdb()  # the runbook's own "clear keys" step, while the switch is active
    refused = order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("0.001"))
    assert refused.status == "rejected" and "kill switch active" in refused.reject_reason
    from trading.tasks import execute_order

    execute_order.delay(pending.pk)
    # Refused by the execution re-check, or cancelled by the kill switch's own sweep: never sent.
    wait_until(lambda: Order.objects.get(pk=pending.pk).status in ("rejected", "cancelled"), timeout=30,
               message="the queued order refused")
    assert not PaperVenueOrder.objects.exists()
    # The engine puts the mirror back within seconds, on its own.
    wait_until(lambda: get_redis().get(KILL_SWITCH_ACTIVE_KEY) == "true", timeout=20, message="mirror restored")


def test_engine_and_redis_killed_when_restarted_then_kill_switch_still_active(agent, worker_env, start_worker,
                                                                             settings):
    data = Path(tempfile.mkdtemp(prefix="tw-redis-"))
    port = find_free_port()
    server = start_redis(data, preferred_port=port)
    try:
        env = {"REDIS_URL": server.url, "CELERY_BROKER_URL": server.url, "CELERY_RESULT_BACKEND": server.url}
        settings.REDIS_URL = server.url
        reset_redis_client()
        engine = start_worker("safety,execution", name="engine1", health_port=find_free_port(), extra_env=env)
        wait_for_worker(engine)
        kill_switch_engage(mode="HALT_ONLY", reason="survive restarts", actor="t", source="test")
        assert get_redis().get(KILL_SWITCH_ACTIVE_KEY) == "true"

        engine.signal(signal.SIGKILL)
        wait_until(lambda: not engine.group_alive(), timeout=10, message="engine dead")
        for pid in server.pids():
            os.kill(pid, signal.SIGKILL)  # Redis crashes ...
        wait_until(lambda: not server.pids(), timeout=10, message="redis dead")
        for child in data.iterdir():  # ... and comes back empty
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        server = start_redis(data, preferred_port=port)
        assert server.port == port
        reset_redis_client()
        assert get_redis().get(KILL_SWITCH_ACTIVE_KEY) is None

        engine2 = start_worker("safety,execution", name="engine2", health_port=find_free_port(), extra_env=env)
        wait_for_worker(engine2)
        wait_until(lambda: get_redis().get(KILL_SWITCH_ACTIVE_KEY) == "true", timeout=30,
                   message="kill switch mirrored again after the restart")
        queued = Order.objects.create(client_order_id="tw-restart-1", agent=agent, exchange="paper", mode="paper",
                                      symbol="BTC/USDT", side="buy", quantity=D("0.001"))
        broker = Celery(broker=server.url, set_as_current=False)  # not the app the test process uses
        broker.send_task("trading.tasks.execute_order", args=[queued.pk], queue="execution")
        wait_until(lambda: Order.objects.get(pk=queued.pk).status == "rejected", timeout=30,
                   message="order after restart refused")
        assert not PaperVenueOrder.objects.exists()
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
        reset_redis_client()


class _Receiver(BaseHTTPRequestHandler):
    fail_first = 2
    received: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Receiver.received.append(body)
        status = 500 if len(_Receiver.received) <= _Receiver.fail_first else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_when_receiver_fails_twice_then_retried_until_delivered(start_worker, settings):
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        settings.WEBHOOK_URL = url
        wait_for_worker(start_worker("safety", name="notifier", extra_env={"WEBHOOK_URL": url}))
        kill_switch_engage(mode="HALT_ONLY", reason="notify me", actor="ops", source="test")
        wait_until(lambda: len(_Receiver.received) >= 3, timeout=30, message="three delivery attempts")
        assert all(b["event"] == "kill_switch.activate" and b["reason"] == "notify me" for b in _Receiver.received)
    finally:
        server.shutdown()


def test_webhook_when_receiver_down_then_activation_still_succeeds(settings):
    settings.WEBHOOK_URL = f"http://127.0.0.1:{find_free_port()}/nobody-listens"
    view = kill_switch_engage(mode="HALT_ONLY", reason="no receiver", actor="ops", source="test")
    assert view.active
    assert redis.Redis.from_url(settings.REDIS_URL).get(KILL_SWITCH_ACTIVE_KEY) == b"true"
