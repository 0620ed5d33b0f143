"""Issue 9, fault 6: connection pool pressure (the runbook's "Database Connection Pool Exhausted").

200 concurrent API clients over real HTTP against gunicorn, started as a process with the
production config (tinywindow/gunicorn_conf.py, DB_CONN_MAX_AGE=60 as in production), while a
strategy worker and an engine worker are kept busy with ticks and orders. A sampler reads
`pg_stat_activity` for this test's database all along: the connections TinyWindow holds never
exceed the budget of docs/reliability.md "Connection budget", and no request gets a 5xx other
than a 503; the excess is queued by gunicorn or answered 429 by the API throttle.
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
from collections import Counter

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import _test_database_url, wait_for_worker
from tests.factories import make_agent
from tests.helpers import BackgroundProcess, wait_until
from tinywindow.embedded import find_free_port
from trading.tasks import tick_agent

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 200
REQUESTS_PER_CLIENT = 2
PATHS = ["/api/status", "/api/orders/?limit=20", "/api/agents/", "/api/positions/", "/health"]
WEB_WORKERS, WEB_THREADS = 2, 4
STRATEGY_CONCURRENCY, ENGINE_CONCURRENCY = 2, 2


def connection_budget(*, web_workers: int, web_threads: int, worker_concurrency: list[int], beat: int = 1) -> int:
    """docs/reliability.md: web threads + per Celery worker (its pool processes + its main process) + beat."""
    return web_workers * web_threads + sum(c + 1 for c in worker_concurrency) + beat


class Sampler(threading.Thread):
    """Counts the connections to one database every 20 ms, leaving out the test's own."""

    def __init__(self, database: str, exclude: list[int]) -> None:
        super().__init__(daemon=True)
        self.database, self.exclude = database, exclude
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(_test_database_url().replace("postgres://", "postgresql://", 1).rsplit("/", 1)[0]
                             + "/postgres", autocommit=True) as conn:
            while not self.stop.is_set():
                count = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND NOT (pid = ANY(%s))",
                    [self.database, self.exclude]).fetchone()[0]
                self.samples.append(count)
                self.stop.wait(0.02)


def _client(port: int, start: threading.Barrier, statuses: Counter, lock: threading.Lock) -> None:
    start.wait()
    for n in range(REQUESTS_PER_CLIENT):
        path = PATHS[n % len(PATHS)]
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
        except OSError as exc:
            status = f"error: {type(exc).__name__}"
        with lock:
            statuses[status] += 1


def test_api_and_workers_when_200_clients_and_busy_workers_then_within_connection_budget(worker_env, start_worker,
                                                                                           tmp_path):
    agents = [make_agent(strategy="tinywindow.bench.strategies.Alternate", params={"exposure": "0.5"},
                         timeframe="1s", tick_seconds=1) for _ in range(20)]
    strategy = start_worker("strategy", name="strategy", concurrency=STRATEGY_CONCURRENCY,
                            extra_env={"DB_CONN_MAX_AGE": "60"})
    engine = start_worker("safety,execution", name="engine", concurrency=ENGINE_CONCURRENCY,
                          health_port=find_free_port(), extra_env={"DB_CONN_MAX_AGE": "60"})
    port = find_free_port()
    web = BackgroundProcess(
        [sys.executable, "-m", "gunicorn", "tinywindow.wsgi:application", "--config", "python:tinywindow.gunicorn_conf",
         "--bind", f"127.0.0.1:{port}"],
        env={**worker_env, "DB_CONN_MAX_AGE": "60", "WEB_WORKERS": str(WEB_WORKERS), "WEB_THREADS": str(WEB_THREADS)},
        log_path=tmp_path / "web.log")
    try:
        wait_for_worker(strategy)
        wait_for_worker(engine)

        def web_up() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            return conn.getresponse().status == 200

        wait_until(web_up, timeout=60, message=f"gunicorn up ({web.log_path})")

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            own = [cursor.fetchone()[0]]
        sampler = Sampler(settings.DATABASES["default"]["NAME"], own)
        sampler.start()

        # Keep every worker busy: ticks for 20 agents, each tick an order for the engine.
        busy = threading.Event()

        def keep_ticking() -> None:
            while not busy.is_set():
                for agent in agents:
                    tick_agent.apply_async(kwargs={"agent_id": agent.pk}, queue="strategy", expires=2)
                busy.wait(0.5)

        ticker = threading.Thread(target=keep_ticking, daemon=True)
        ticker.start()

        statuses: Counter = Counter()
        lock = threading.Lock()
        barrier = threading.Barrier(CLIENTS)
        clients = [threading.Thread(target=_client, args=(port, barrier, statuses, lock)) for _ in range(CLIENTS)]
        started = time.monotonic()
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=300)
        elapsed = time.monotonic() - started
        busy.set()
        ticker.join(timeout=10)
        sampler.stop.set()
        sampler.join(timeout=10)
    finally:
        web.stop()

    budget = connection_budget(web_workers=WEB_WORKERS, web_threads=WEB_THREADS,
                               worker_concurrency=[STRATEGY_CONCURRENCY, ENGINE_CONCURRENCY], beat=0)
    peak = max(sampler.samples)
    print(f"\n{CLIENTS} clients x {REQUESTS_PER_CLIENT} requests in {elapsed:.1f} s: {dict(statuses)}; "
          f"peak {peak} connections (budget {budget}), {len(sampler.samples)} samples")
    assert sum(statuses.values()) == CLIENTS * REQUESTS_PER_CLIENT
    assert not [s for s in statuses if not isinstance(s, int) or (s >= 500 and s != 503)], statuses
    assert statuses[200] > 0 and set(statuses) <= {200, 429, 503}, statuses
    assert len(sampler.samples) > 10
    assert peak <= budget, f"peak {peak} connections over the budget of {budget}"
    from trading.models import Order

    assert Order.objects.filter(agent__in=agents).exists()  # the workers really were busy


def test_api_when_database_refuses_connections_then_503_with_retry_after_not_500(transactional_db):
    """What a client sees when the pool is exhausted or PostgreSQL is away: a 503 to retry."""
    from django.test import Client

    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["PORT"] = str(find_free_port())  # nobody listens: connection refused
    try:
        response = Client(REMOTE_ADDR="127.0.0.1").get("/api/orders/")
    finally:
        connection.close()
        connection.settings_dict.update(original)
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "5"
    assert "database" in response.json()["detail"]
