"""A real Prometheus scraping a real TinyWindow (`manage.py up`), as an operator's Grafana would.

Every PromQL expression of the three dashboards and of the alert rules is evaluated over the
HTTP API without error; the runbook's latency query, orders, equity and breaker state return
data; the kill switch moves the metric and fires its alert; the JSON logs tie a fill to the
tick that decided it. Needs Debian's `prometheus` package (.ci/run installs it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import yaml

from tests.e2e.test_up import UpRun, http
from tests.e2e.test_up import e2e_database as e2e_database  # a fixture, used by name
from tests.helpers import ROOT, BackgroundProcess, manage, wait_until
from tests.integration.test_deployment import RUNBOOK_PROMQL, alert_exprs, dashboard_exprs
from tinywindow.embedded import find_free_port

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus")
KEY_QUERIES = {
    "runbook p95 latency": RUNBOOK_PROMQL,
    "orders": 'sum by (status) (rate(tinywindow_orders_total{status="executed"}[5m]))',
    "equity": "max(tinywindow_equity)",
    "breaker state": "max by (breaker, scope) (tinywindow_circuit_breaker_state)",
}


class PrometheusRun:
    """The `prometheus` binary on a free loopback port, scraping the given targets every second
    and evaluating the repository's alert rules."""

    def __init__(self, tmp_path: Path, targets: dict[str, str]) -> None:
        self.port = find_free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ROOT / "docker" / "prometheus" / "alerts.yml")],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                               for job, target in targets.items()],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.proc = BackgroundProcess(
            [PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            env=dict(os.environ), log_path=tmp_path / "prometheus.log")

    def get(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with the error in JSON
            return json.loads(exc.read())

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)

    def results(self, expr: str) -> list[dict]:
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer}"
        return answer["data"]["result"]

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc.process.poll() is None, f"prometheus exited:\n{self.proc.log()}"
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as response:
                return response.status == 200

        wait_until(ready, timeout=30, message="prometheus ready")

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.get("/api/v1/alerts")["data"]["alerts"]
                if a["state"] == "firing"}


# An agent that changes its mind on almost every 5 s candle (long while the last close is above
# the one before), ticking every 2 s: trades flow within seconds, whatever the market's regime.
BUSY_AGENT = """
from decimal import Decimal
from trading.services.agents import agent_create
agent_create(name="e2e-busy", strategy="trading.strategies.sma_cross.SmaCross",
             params={"fast": 1, "slow": 2, "exposure": "0.5"}, symbols=["ETH/USDT"], capital=Decimal("10000"),
             timeframe="5s", tick_seconds=2)
"""
PLACE_ORDER = """
from decimal import Decimal
from trading.models import Agent
from trading.services.orders import order_create
agent = Agent.objects.get(name="e2e-busy")
order_create(agent=agent, symbol="ETH/USDT", side="buy", quantity=Decimal("0.01"), decision_reason="e2e probe")
"""


def shell(run: UpRun, code: str) -> None:
    """Run Python in `manage.py shell` against the running system, as an operator could."""
    result = manage("shell", "-c", code, env=run.env, timeout=60)
    assert result.returncode == 0, result.stderr


def finite(results: list[dict]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in results)


def json_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


@pytest.mark.skipif(PROMETHEUS is None, reason="the `prometheus` binary is not installed (Debian package "
                                               "`prometheus`; .ci/run installs it)")
def test_prometheus_when_scraping_tinywindow_then_every_dashboard_and_alert_query_evaluates(tmp_path, e2e_database):
    redis_url = urlunsplit(urlsplit(os.environ["REDIS_URL"])._replace(path="/12"))
    redis.Redis.from_url(redis_url).flushdb()
    run = UpRun(tmp_path, {"DATABASE_URL": e2e_database, "REDIS_URL": redis_url, "RISK_SNAPSHOT_SECONDS": "3",
                           "LOG_FORMAT": "json"})
    prometheus = PrometheusRun(tmp_path, {"tinywindow-web": f"127.0.0.1:{run.ports['web']}",
                                          "tinywindow-engine": f"127.0.0.1:{run.ports['engine']}"})
    run.start()
    try:
        prometheus.wait_ready()
        run.wait_healthy()

        # Demo agents trade within a minute or two: wait until the key panels have data.
        shell(run, BUSY_AGENT)
        missing = list(KEY_QUERIES)
        started = time.monotonic()

        def key_data() -> bool:
            answers = {name: prometheus.results(expr) for name, expr in KEY_QUERIES.items()}
            missing[:] = [name for name, results in answers.items()
                          if not (finite(results) if name == "runbook p95 latency" else results)]
            if "runbook p95 latency" in missing and time.monotonic() - started > 30:
                # A rate needs venue calls at two scrapes at least. Should the agents still be
                # quiet, add an order through the real path (queue, engine, venue).
                shell(run, PLACE_ORDER)
            return not missing

        try:
            wait_until(key_data, timeout=150, interval=1, message="data for " + ", ".join(KEY_QUERIES))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still without data: {missing}") from None
        assert prometheus.results('up{job=~"tinywindow-.*"} == 1') and len(
            prometheus.results('up{job=~"tinywindow-.*"}')) == 2

        # The kill switch: the metric and the alert follow the API call.
        assert float(prometheus.results("max(tinywindow_kill_switch_active)")[0]["value"][1]) == 0
        status, _ = http("POST", run.url("web", "/api/kill-switch"), {"mode": "HALT_ONLY", "reason": "e2e metrics"})
        assert status == 200
        wait_until(lambda: "TinyWindowKillSwitchActive" in prometheus.firing(), timeout=30, interval=0.5,
                   message="TinyWindowKillSwitchActive firing")
        assert float(prometheus.results("max(tinywindow_kill_switch_active)")[0]["value"][1]) == 1

        # Every expression of the dashboards and the alert rules evaluates; say which have data.
        report = []
        for where, title, expr in dashboard_exprs():
            report.append((f"{where}: {title}", expr, len(prometheus.results(expr))))
        for alert, expr in alert_exprs():
            report.append((f"alert {alert}", expr, len(prometheus.results(expr))))
        print("\nPromQL over the HTTP API (series returned):")  # shown with -s / -rP
        for where, expr, count in report:
            print(f"  {count:3d}  {where}  |  {' '.join(expr.split())}")
        rules = [r for g in prometheus.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        assert rules and all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
        assert len(rules) == len(alert_exprs())

        status, _ = http("DELETE", run.url("web", "/api/kill-switch"))
        assert status == 200
    finally:
        prometheus.proc.stop()
        code = run.interrupt_and_wait()
    assert code == 0, run.proc.log()

    # From tick to fill in the JSON logs: the fill's root task is the tick that created the order.
    logs = run.var_dir / "log"
    fills = [r for r in json_lines(logs / "engine.log") if "fill(s)" in r["message"] and r.get("root_task_id")]
    assert fills, f"no fill line with root_task_id in {logs / 'engine.log'}"
    created = {(r.get("order_id"), r.get("task_id")) for path in logs.glob("strategy-*.log")
               for r in json_lines(path) if r.get("task_name") == "trading.tasks.tick_agent"}
    assert any((f["order_id"], f["root_task_id"]) in created for f in fills), sys.stderr.write(str(fills[:3]))
