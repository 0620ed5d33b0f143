"""The whole system as a newcomer runs it: `python manage.py up`, real processes, real HTTP.

1. Against the configured servers (a fresh database): health on :web and :engine, a tick
   becomes an executed order through real Celery workers, the runbook's kill-switch curl
   stops all trading from its response on, the runbook's SQL runs through `dbshell`,
   Ctrl-C leaves no process behind.
2. With DATABASE_URL/REDIS_URL unset: embedded PostgreSQL and Redis start, the runbook's
   `pg_isready`/`redis-cli ping` answer, Ctrl-C stops them too, and a second run reuses the data.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
import pytest
import redis

from tests.helpers import ROOT, BackgroundProcess, manage, wait_until
from tinywindow.embedded import find_free_port, tool_bin_dirs

pytestmark = pytest.mark.e2e

RUNBOOK_CANDIDATES = (ROOT.parent / "shared" / "runbook.md", ROOT / "docs" / "runbook.md")


def runbook_sql() -> list[str]:
    path = next(p for p in RUNBOOK_CANDIDATES if p.exists())
    return [block.strip() for block in re.findall(r"```sql\n(.*?)```", path.read_text(), re.S)]


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def processes_using(var_dir: Path) -> list[psutil.Process]:
    """Every process started for this run: roles carry the var dir in their environment,
    embedded servers in their command line."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid == os.getpid():
                continue
            if str(var_dir) in " ".join(proc.info["cmdline"] or []) or \
                    proc.environ().get("TINYWINDOW_VAR_DIR") == str(var_dir):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def pg(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


class UpRun:
    def __init__(self, tmp_path: Path, env_overrides: dict[str, str | None]) -> None:
        self.var_dir = tmp_path / "var"
        self.ports = {"web": find_free_port(), "engine": find_free_port(), "flower": find_free_port()}
        env = dict(os.environ)
        for key in ("PROMETHEUS_MULTIPROC_DIR",):
            env.pop(key, None)
        env.update(TINYWINDOW_VAR_DIR=str(self.var_dir), WEB_PORT=str(self.ports["web"]),
                   ENGINE_PORT=str(self.ports["engine"]), FLOWER_PORT=str(self.ports["flower"]),
                   DEMO_TICK_SECONDS="2", ADMIN_PASSWORD="e2e-admin-pass")
        for key, value in env_overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        self.env = env
        self.log_path = tmp_path / "up.log"
        self.proc: BackgroundProcess | None = None

    def start(self) -> None:
        self.proc = BackgroundProcess([sys.executable, "manage.py", "up"], env=self.env, log_path=self.log_path)

    def url(self, role: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}{path}"

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            assert self.proc.process.poll() is None, f"up exited early:\n{self.proc.log()}"
            return all(http("GET", self.url(role, "/health"))[0] == 200 for role in ("web", "engine"))

        wait_until(healthy, timeout=120, interval=0.5, message="web and engine /health 200")
        wait_until(lambda: "Press Ctrl-C" in self.proc.log(), timeout=30, message="the summary printed")

    def interrupt_and_wait(self) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to `up` (its roles live in their own sessions)."""
        self.proc.process.send_signal(signal.SIGINT)
        return self.proc.process.wait(timeout=90)


@pytest.fixture
def e2e_database():
    """A fresh database on the test PostgreSQL server, dropped afterwards."""
    server_url = os.environ["DATABASE_URL"]
    name = f"tinywindow_e2e_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg(with_database(server_url, "postgres")), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_database(server_url, name)
    with psycopg.connect(pg(with_database(server_url, "postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_up_when_started_then_trades_halts_on_kill_switch_and_stops_cleanly(tmp_path, e2e_database):
    redis_url = urlunsplit(urlsplit(os.environ["REDIS_URL"])._replace(path="/13"))
    redis.Redis.from_url(redis_url).flushdb()
    run = UpRun(tmp_path, {"DATABASE_URL": e2e_database, "REDIS_URL": redis_url})
    run.start()
    try:
        run.wait_healthy()
        assert "TinyWindow is up (PAPER mode)" in run.proc.log()

        with psycopg.connect(pg(e2e_database), autocommit=True) as conn:
            def count(sql: str, *params) -> int:
                return conn.execute(sql, params).fetchone()[0]

            wait_until(lambda: count("SELECT count(*) FROM orders WHERE status = 'executed'") > 0, timeout=170,
                       interval=1, message="an executed order from a demo agent's tick")
            assert count("SELECT count(*) FROM paper_orders") > 0
            assert count("SELECT count(*) FROM positions WHERE quantity <> 0") > 0

            status, body = http("POST", run.url("web", "/api/kill-switch"),
                                {"mode": "HALT_ONLY", "reason": "Emergency stop"})
            activated_at = datetime.now(UTC)
            assert status == 200 and body["active"] is True
            assert redis.Redis.from_url(redis_url).get("tinywindow:kill_switch:active") == b"true"
            assert count("SELECT count(*) FROM kill_switch_events WHERE action = 'activate'") == 1

            # Let every agent tick at least twice more, then look for anything that traded.
            settle = activated_at + timedelta(seconds=5)
            wait_until(lambda: count("SELECT count(*) FROM agents WHERE last_tick_at < %s", settle) == 0,
                       timeout=60, interval=0.5, message="every agent ticked after the activation")
            assert count("SELECT count(*) FROM paper_orders WHERE created_at > %s", activated_at) == 0
            assert count("SELECT count(*) FROM fills WHERE executed_at > %s", activated_at) == 0
            assert count("SELECT count(*) FROM orders WHERE status IN ('pending', 'submitted')") == 0

            # The runbook's SQL, verbatim, through dbshell.
            for sql in runbook_sql():
                result = manage("dbshell", "--", "-v", "ON_ERROR_STOP=1", "-c", sql, env=run.env)
                assert result.returncode == 0, f"{sql}\n{result.stderr}"

            status, body = http("DELETE", run.url("web", "/api/kill-switch"))
            assert status == 200 and body["active"] is False
            assert redis.Redis.from_url(redis_url).get("tinywindow:kill_switch:active") == b"false"

            metrics = urllib.request.urlopen(run.url("engine", "/metrics"), timeout=10).read().decode()
            assert 'tinywindow_orders_total{' in metrics and 'status="executed"' in metrics
            assert "tinywindow_api_latency_seconds_bucket" in metrics
    finally:
        code = run.interrupt_and_wait()
    assert code == 0, run.proc.log()
    wait_until(lambda: not processes_using(run.var_dir), timeout=30,
               message=f"no process left: {processes_using(run.var_dir)}")
    assert "TinyWindow stopped." in run.proc.log()


def test_up_when_no_urls_then_embedded_servers_start_stop_and_keep_data(tmp_path):
    run = UpRun(tmp_path, {"DATABASE_URL": None, "REDIS_URL": None, "PAPER_TRADING_MODE": None})
    run.start()
    try:
        run.wait_healthy()
        log = run.proc.log()
        pg_port = int(re.search(r"PostgreSQL: embedded, postgres://\S+:(\d+)/", log).group(1))
        redis_port = int(re.search(r"Redis: embedded, redis://127\.0\.0\.1:(\d+)/", log).group(1))
        path_env = {**run.env, "PATH": os.pathsep.join([*map(str, tool_bin_dirs()), run.env["PATH"]])}
        assert subprocess.run(["pg_isready", "-h", "localhost", "-p", str(pg_port)], env=path_env,
                              capture_output=True).returncode == 0
        pong = subprocess.run(["redis-cli", "-p", str(redis_port), "ping"], env=path_env, capture_output=True,
                              text=True)
        assert pong.stdout.strip() == "PONG"
        shellenv = manage("shellenv", env=run.env)
        assert shellenv.returncode == 0 and str(tool_bin_dirs()[0]) in shellenv.stdout
    finally:
        code = run.interrupt_and_wait()
    assert code == 0, run.proc.log()
    wait_until(lambda: not processes_using(run.var_dir), timeout=30,
               message=f"no process left: {processes_using(run.var_dir)}")

    first_log = run.proc.log()
    assert "admin user created" not in first_log or "e2e-admin-pass" not in first_log  # never print a set password
    run.start()  # second run: same data directory
    try:
        run.wait_healthy()
        second_log = run.log_path.read_text()
        assert "demo agent created" not in second_log  # the data was kept: nothing seeded twice
    finally:
        assert run.interrupt_and_wait() == 0
    wait_until(lambda: not processes_using(run.var_dir), timeout=30, message="no process left after second run")
