"""Backups and the recovery drill (the runbook's RPO 15 min, RTO 1 h; docs/reliability.md).

Real pg_dump/pg_restore through `manage.py backup|restore` as an operator runs them, real
PostgreSQL databases, real Celery worker processes on the restored database.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from safety.models import CircuitBreakerConfig
from safety.services.kill_switch import kill_switch_engage
from tests.conftest import wait_for_worker
from tests.desk import open_stale_data_breaker
from tests.factories import make_agent
from tests.helpers import manage, wait_until
from tinywindow.bootstrap import bootstrap
from tinywindow.embedded import find_free_port
from tinywindow.redis_client import BREAKER_STATUS_KEY, KILL_SWITCH_ACTIVE_KEY
from trading.services.orders import order_create, order_execute

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal
TABLES = ("agents", "orders", "fills", "positions", "kill_switch_events", "circuit_breaker_events", "audit_events")


def _admin_conninfo(dbname: str) -> str:
    db = settings.DATABASES["default"]
    password = f" password={db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']}{password} dbname={dbname}"


@pytest.fixture
def empty_database(worker_env):
    """A new, empty database on the test server; its DATABASE_URL. Dropped at the end."""
    name = f"{settings.DATABASES['default']['NAME']}_restore"
    with psycopg.connect(_admin_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield worker_env["DATABASE_URL"].rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(_admin_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _query(url: str, sql: str) -> list[tuple]:
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(_admin_conninfo(dbname)) as conn:
        return conn.execute(sql).fetchall()


def _counts(url: str) -> dict[str, int]:
    return {table: _query(url, f"SELECT count(*) FROM {table}")[0][0] for table in TABLES}  # noqa: S608 - constants


def _backup(env: dict[str, str], directory: Path, *extra: str) -> Path:
    run = manage("backup", "--dir", str(directory), *extra, env=env)
    assert run.returncode == 0, run.stderr
    assert "backup written:" in run.stdout and "dumping" in run.stdout  # progress, then the summary
    return Path(run.stdout.split("backup written: ")[1].split(" (")[0])


def test_backup_when_run_three_times_with_keep_2_then_newest_two_kept(worker_env, tmp_path):
    bootstrap(demo_agents=False)
    paths = [_backup(worker_env, tmp_path, "--keep", "2") for _ in range(3)]
    kept = sorted(tmp_path.glob("tinywindow-*.dump"))
    assert kept == sorted(paths[1:])
    assert all(p.read_bytes()[:5] == b"PGDMP" for p in kept)  # pg_dump's custom format
    assert not list(tmp_path.glob("*.partial"))


def test_restore_when_database_not_empty_then_exit_2_and_nothing_changed(worker_env, tmp_path, empty_database):
    bootstrap(demo_agents=False)
    make_agent(name="kept")
    dump = _backup(worker_env, tmp_path)
    restore_env = {**worker_env, "DATABASE_URL": empty_database}
    assert manage("restore", str(dump), env=restore_env).returncode == 0
    _query(empty_database, "SELECT 1")  # reachable
    with psycopg.connect(_admin_conninfo(empty_database.rsplit("/", 1)[1]), autocommit=True) as conn:
        conn.execute("UPDATE agents SET capital = 1 WHERE name = 'kept'")

    again = manage("restore", str(dump), env=restore_env)

    assert again.returncode == 2, again.stderr
    assert "not empty" in again.stderr and "--force" in again.stderr and "Traceback" not in again.stderr
    assert _query(empty_database, "SELECT capital FROM agents WHERE name = 'kept'") == [(D("1"),)]
    forced = manage("restore", "--force", str(dump), env=restore_env)
    assert forced.returncode == 0, forced.stderr
    assert _query(empty_database, "SELECT capital FROM agents WHERE name = 'kept'") == [(D("10000"),)]


@pytest.mark.parametrize("content", [None, b"", b"not a dump", b"PGDMP truncated"])
def test_restore_when_file_missing_or_not_a_backup_then_clear_error_and_nothing_written(worker_env, tmp_path,
                                                                                       empty_database, content):
    path = tmp_path / "bad.dump"
    if content is not None:
        path.write_bytes(content)
    run = manage("restore", str(path), env={**worker_env, "DATABASE_URL": empty_database})
    assert run.returncode in (1, 2) and run.stderr.startswith("CommandError:"), run.stderr
    assert "Traceback" not in run.stderr
    assert _query(empty_database, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_backup_when_database_unreachable_or_keep_invalid_then_clear_error(worker_env, tmp_path):
    down = {**worker_env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{find_free_port()}/nowhere",
            "DB_CONNECT_TIMEOUT": "2"}
    run = manage("backup", "--dir", str(tmp_path), env=down)
    assert run.returncode == 1 and "Traceback" not in run.stderr and run.stderr.startswith("CommandError:")
    bad = manage("backup", "--dir", str(tmp_path), "--keep", "0", env=worker_env)
    assert bad.returncode == 2 and "--keep" in bad.stderr
    assert not list(tmp_path.glob("*.dump"))


def test_backup_schedule_when_bootstrapped_then_every_15_minutes_on_the_default_queue():
    bootstrap(demo_agents=False)
    task = PeriodicTask.objects.get(name="backup")
    assert (task.task, task.queue, task.enabled) == ("tinywindow.tasks.backup_database", "default", True)
    assert (task.interval.every, task.interval.period) == (settings.BACKUP_SECONDS, "seconds")
    assert settings.BACKUP_SECONDS == 900  # the runbook's RPO


def test_backup_task_when_run_by_a_real_worker_then_dump_in_backup_dir(start_worker, tmp_path):
    from tinywindow.celery import app

    bootstrap(demo_agents=False)
    directory = tmp_path / "scheduled"
    worker = start_worker("default", name="housekeeping", concurrency=1,
                          extra_env={"BACKUP_DIR": str(directory), "BACKUP_KEEP": "3"})
    wait_for_worker(worker)
    task = PeriodicTask.objects.get(name="backup")
    app.send_task(task.task, queue=task.queue)  # what beat sends, through the project's app
    dumps = wait_until(lambda: list(directory.glob("tinywindow-*.dump")), timeout=60,
                       message=f"a backup written by the worker ({worker.log_path})")
    assert dumps[0].read_bytes()[:5] == b"PGDMP"


def _shell(env: dict[str, str], code: str) -> str:
    run = manage("shell", "-c", code, env=env)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


NEW_ORDER = ("from decimal import Decimal; from trading.models import Agent; "
             "from trading.services.orders import order_create; "
             "o = order_create(agent=Agent.objects.get(name='drill-btc'), symbol='BTC/USDT', side='buy', "
             "quantity=Decimal('0.01')); print(o.pk, o.status)")


def test_drill_when_restored_into_an_empty_database_then_workers_resume_with_safety_state_and_trade(
        worker_env, tmp_path, empty_database, start_worker, redis_client):
    # Given a desk that traded, with the kill switch active and a breaker open.
    bootstrap(demo_agents=False)
    btc = make_agent(name="drill-btc")
    make_agent(name="drill-sol", symbols=["SOL/USDT"])
    order_execute(order_id=order_create(agent=btc, symbol="BTC/USDT", side="buy", quantity=D("0.02"),
                                        enqueue=False).pk)
    # A recovery period longer than the drill: the breaker must still be OPEN (not HALF_OPEN) at the end.
    CircuitBreakerConfig.objects.filter(name="stale_data").update(recovery_seconds=3600)
    breaker = open_stale_data_breaker("SOL/USDT")
    kill_switch_engage(mode="HALT_ONLY", reason="drill: before the backup", actor="drill", source="test")
    source_counts = _counts(worker_env["DATABASE_URL"])
    assert source_counts["fills"] >= 1 and source_counts["kill_switch_events"] == 1
    dump = _backup(worker_env, tmp_path / "backups")

    # When it is restored into an empty database, on a Redis that lost everything.
    env = {**worker_env, "DATABASE_URL": empty_database}
    restored = manage("restore", str(dump), env=env)
    assert restored.returncode == 0, restored.stderr
    assert "safety mirror rewritten" in restored.stdout
    assert _counts(empty_database) == source_counts
    redis_client.flushdb()
    engine_port = find_free_port()
    engine = start_worker("safety,execution", name="engine", health_port=engine_port, extra_env=env)
    wait_for_worker(engine)

    # Then the kill switch and the breaker are as they were, and the engine rebuilt the mirror.
    status = json.loads(manage("killswitch", "status", "--json", env=env).stdout)
    assert (status["active"], status["mode"], status["reason"]) == (True, "HALT_ONLY", "drill: before the backup")
    assert _query(empty_database, "SELECT state FROM circuit_breaker_states WHERE state <> 'CLOSED'") == [("OPEN",)]
    breakers = manage("breakers", "status", env=env)
    assert breaker in breakers.stdout and "OPEN" in breakers.stdout
    wait_until(lambda: redis_client.get(KILL_SWITCH_ACTIVE_KEY) == "true", timeout=30,
               message=f"kill switch mirrored by the engine ({engine.log_path})")
    assert redis_client.get(BREAKER_STATUS_KEY) == "OPEN"
    refused_id, refused_status = _shell(env, NEW_ORDER).split()[-2:]
    assert refused_status == "rejected"

    # And once the kill switch is off, it trades again (the SOL breaker still open, BTC unaffected).
    off = manage("killswitch", "deactivate", "--reason", "drill: restored", env=env)
    assert off.returncode == 0, off.stderr
    order_id, _ = _shell(env, NEW_ORDER).split()[-2:]
    status_sql, fills_sql = (f"SELECT status FROM orders WHERE id = {int(order_id)}",  # noqa: S608 - an int
                             f"SELECT count(*) FROM fills WHERE order_id = {int(order_id)}")  # noqa: S608
    wait_until(lambda: _query(empty_database, status_sql) == [("executed",)], timeout=60,
               message=f"the restored desk trades ({engine.log_path})")
    assert _query(empty_database, fills_sql)[0][0] >= 1
    assert redis_client.get(BREAKER_STATUS_KEY) == "OPEN"  # deactivation never resets breakers
    assert os.path.getsize(dump) > 0

