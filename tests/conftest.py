from __future__ import annotations

import os
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.helpers import BackgroundProcess, wait_until


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing():
    """Hashing passwords at production strength costs ~0.3 s a user; tests need users, not strength."""
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def clean_redis():
    """Every test starts with an empty test Redis database (safety mirror, locks, broker)."""
    from tinywindow.redis_client import get_redis, reset_redis_client

    reset_redis_client()
    get_redis().flushdb()
    yield
    reset_redis_client()


@pytest.fixture(autouse=True)
def project_celery_app_stays_current():
    """A test that builds a bare `Celery(...)` makes it the current app; every later `apply_async`
    in this process then goes to that app's default queue, which no worker consumes."""
    from celery import current_app

    yield
    assert current_app.main == "tinywindow", "a test left another Celery app current: pass set_as_current=False"


@pytest.fixture
def redis_client():
    from tinywindow.redis_client import get_redis

    return get_redis()


@pytest.fixture
def agent(db):
    from tests.factories import make_agent

    return make_agent()


@pytest.fixture
def fixed_price_feed(monkeypatch):
    """The synthetic feed's price pinned to a value the test controls (the venue and tick use it)."""
    from tests.factories import FixedPriceFeed
    from trading import feeds

    feed = FixedPriceFeed(price=Decimal("100"))
    monkeypatch.setattr(feeds, "feed_for", lambda name: feed)
    import trading.services.agents as agents_module
    import trading.services.snapshots as snapshots_module

    monkeypatch.setattr(agents_module, "feed_for", lambda name: feed)
    monkeypatch.setattr(snapshots_module, "feed_for", lambda name: feed)
    return feed


def _test_database_url() -> str:
    """The URL of the database pytest-django created for this run (workers must use it)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def worker_env(transactional_db, tmp_path) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = _test_database_url()
    env["DB_CONN_MAX_AGE"] = "0"
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir()
    return env


@pytest.fixture
def start_worker(worker_env, tmp_path):
    """Start real Celery worker processes: start_worker("safety,execution", health_port=...)."""
    started: list[BackgroundProcess] = []

    def start(queues: str, *, name: str = "w", concurrency: int = 2, health_port: int | None = None,
              extra_env: dict[str, str] | None = None) -> BackgroundProcess:
        argv = [sys.executable, "-m", "celery", "-A", "tinywindow", "worker", "-Q", queues, "-n", f"{name}@%h",
                "-c", str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
        if health_port:
            argv += ["--health-port", str(health_port)]
        env = {**worker_env, **(extra_env or {})}
        proc = BackgroundProcess(argv, env=env, log_path=tmp_path / f"worker-{name}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def wait_for_worker(proc: BackgroundProcess, timeout: float = 30) -> None:
    wait_until(lambda: "ready." in proc.log(), timeout=timeout, message=f"worker ready ({proc.log_path})")
