"""docker/ without Docker: the compose file, the Prometheus rules, the Grafana dashboards, and the
image's start scripts run as they are on this machine against the test PostgreSQL and Redis.

There is no Docker engine here: the compose file is checked by parsing it against DESIGN.md's
processes, and the same scripts the containers run (entrypoint.sh, start-*.sh,
healthcheck.py) are run outside Docker.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, BackgroundProcess, wait_until
from tinywindow.embedded import find_free_port

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DASHBOARDS = DOCKER / "grafana" / "dashboards"
PROMETHEUS = DOCKER / "prometheus"
DESIGN_CANDIDATES = (ROOT.parent / "shared" / "DESIGN.md", ROOT / "DESIGN.md")
RUNBOOK_CANDIDATES = (ROOT.parent / "shared" / "runbook.md", ROOT / "docs" / "runbook.md")
DASHBOARD_UIDS = {"trading.json": "tinywindow-trading", "risk.json": "tinywindow-risk",
                  "system.json": "tinywindow-system"}
APP_SERVICES = {"web", "engine", "strategy", "beat", "flower"}
RUNBOOK_PROMQL = "histogram_quantile(0.95, rate(tinywindow_api_latency_seconds_bucket[5m]))"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(text: str) -> str:
    """Compose's ${VAR:-default}, with nothing set: the defaults."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def dashboard_panels(data: dict) -> list[dict]:
    panels = []
    for panel in data.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # rows
    return panels


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every query of every panel."""
    return [(name, panel["title"], target["expr"])
            for name in DASHBOARD_UIDS
            for panel in dashboard_panels(json.loads((DASHBOARDS / name).read_text()))
            for target in panel.get("targets", [])]


def alert_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def catalog_names() -> set[str]:
    return set(re.findall(r"^\| `(tinywindow_[a-z_]+)` \|", (ROOT / "docs" / "metrics.md").read_text(), re.M))


def metric_names_in(expr: str) -> set[str]:
    found = set()
    for name in re.findall(r"\b(tinywindow_[a-z_]+)", expr):
        found.add(name if name.endswith("_total") else re.sub(r"_(bucket|count|sum)$", "", name))
    return found


# --- compose ------------------------------------------------------------------------------------

def design_roles() -> set[str]:
    path = next((p for p in DESIGN_CANDIDATES if p.exists()), None)
    if path is None:
        pytest.skip("DESIGN.md not found next to the repository")
    section = path.read_text().split("## Processes", 1)[1].split("\n## ", 1)[0]
    roles = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("role", "") or set(cells[0]) <= {"-"}:
            continue
        roles |= {part.split()[0] for part in cells[0].split(",")}  # "strategy workers" -> strategy
    return roles


def test_compose_when_parsed_then_services_are_designs_processes_with_healthchecks():
    services = compose()["services"]
    assert set(services) == design_roles() == APP_SERVICES | {"postgres", "redis", "prometheus", "grafana"}
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        for port in service.get("ports", []):
            assert interpolate(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        assert service.get("restart") == "unless-stopped", f"{name} does not come back after a crash/reboot"
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}  # one image for all
        script = service["command"][0]
        assert script.startswith("/app/docker/start-") and os.access(DOCKER / Path(script).name, os.X_OK)
        assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"
    assert "ports" not in services["strategy"]  # scalable: replicas never clash on a host port
    assert "8080" in str(services["engine"]["ports"])
    assert services["engine"]["environment"]["ENGINE_HEALTH_PORT"] == "8080"


def test_compose_when_host_curls_the_kill_switch_then_its_address_counts_as_local():
    data = compose()
    config = data["networks"]["default"]["ipam"]["config"][0]
    subnet = ipaddress.ip_network(interpolate(config["subnet"]))
    gateway = ipaddress.ip_address(interpolate(config["gateway"]))
    local = [ipaddress.ip_network(n) for n in interpolate(data["services"]["web"]["environment"]["LOCAL_NETWORKS"])
             .split(",")]
    assert gateway in subnet and local == [ipaddress.ip_network(f"{gateway}/32")]  # the host, not the network


def test_compose_when_prometheus_scrapes_then_targets_exist_and_web_accepts_the_host_name():
    services = compose()["services"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["tinywindow-web"]["static_configs"][0]["targets"] == ["web:8000"]
    assert jobs["tinywindow-engine"]["static_configs"][0]["targets"] == ["engine:8080"]
    assert jobs["tinywindow-strategy"]["dns_sd_configs"][0]["names"] == ["strategy"]
    assert services["strategy"]["environment"]["STRATEGY_HEALTH_PORT"] == "8080"
    assert "web" in env_file(DOCKER / "defaults.env")["ALLOWED_HOSTS"].split(",")
    assert "web" in env_file(ROOT / ".env.example")["ALLOWED_HOSTS"].split(",")
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in services["grafana"]["volumes"]


def test_dockerfile_when_read_then_slim_non_root_image():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["/app/docker/entrypoint.sh"]' in text
    assert "build-essential" not in text.split("AS runtime", 1)[1]  # no compiler in the final image


def test_env_example_when_read_then_every_setting_documented_with_rate_limits_and_safety():
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    read = set(re.findall(r'env\.[a-z]+\("([A-Z0-9_]+)"', (ROOT / "tinywindow" / "settings.py").read_text()))
    assert read - documented == set(), "add these settings to .env.example"
    assert {"EXCHANGE_RATE_LIMIT_MS", "BREAKER_CHECK_SECONDS", "BREAKER_RECOVERY_SECONDS", "LOCAL_NETWORKS",
            "LOG_FORMAT", "PAPER_TRADING_MODE"} <= documented


# --- Prometheus and Grafana files ---------------------------------------------------------------

def promtool(*args: str) -> subprocess.CompletedProcess:
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [
    ("check", "config", "prometheus.yml"),
    ("check", "rules", "alerts.yml"),
    ("test", "rules", "alerts_test.yml"),
], ids=["check-config", "check-rules", "test-rules"])
def test_promtool_when_run_on_the_repo_files_then_success(args):
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_when_read_then_every_alert_of_the_issue_has_a_rule_and_a_unit_test():
    alerts = {name for name, _ in alert_exprs()}
    assert {"TinyWindowKillSwitchActive", "TinyWindowBreakerOpen", "TinyWindowApiErrorRateHigh",
            "TinyWindowApiLatencyHigh", "TinyWindowMarketDataStale", "TinyWindowQueueBacklog",
            "TinyWindowEngineDown", "TinyWindowNoSnapshot"} <= alerts
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    assert alerts - {"TinyWindowWebDown"} <= tested


def test_dashboards_when_loaded_then_runbook_uids_and_every_panel_queries_prometheus():
    for name, uid in DASHBOARD_UIDS.items():
        data = json.loads((DASHBOARDS / name).read_text())
        assert data["uid"] == uid
        panels = dashboard_panels(data)
        assert panels, name
        for panel in panels:
            if panel["type"] == "row":
                continue
            where = f"{name}: {panel.get('title')}"
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, where
            assert panel.get("targets"), where
            for target in panel["targets"]:
                assert target["expr"].strip() and target["datasource"]["uid"] == "prometheus", where
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
    provisioned = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert provisioned["datasources"][0]["uid"] == "prometheus"
    runbook = next((p for p in RUNBOOK_CANDIDATES if p.exists()), None)
    if runbook is not None:
        for uid in DASHBOARD_UIDS.values():
            assert f"http://localhost:3000/d/{uid}" in runbook.read_text()
        assert RUNBOOK_PROMQL in runbook.read_text()
    assert RUNBOOK_PROMQL in [expr for _, _, expr in dashboard_exprs()]


def test_dashboards_and_alerts_when_they_name_a_metric_then_the_catalog_has_it():
    catalog = catalog_names()
    used = {(where, name) for where, _, expr in dashboard_exprs() for name in metric_names_in(expr)}
    used |= {(alert, name) for alert, expr in alert_exprs() for name in metric_names_in(expr)}
    assert {(where, name) for where, name in used if name not in catalog} == set()


# --- the start scripts, outside Docker ----------------------------------------------------------

@pytest.fixture
def script_env(worker_env, tmp_path) -> dict[str, str]:
    env = dict(worker_env)
    env.update(PYTHON=sys.executable, DB_WAIT_TIMEOUT="20", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"))
    env.pop("TINYWINDOW_PREPARED", None)
    return env


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def healthcheck(*args: str) -> int:
    return subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), *args], capture_output=True,
                          timeout=30).returncode


@pytest.mark.django_db(transaction=True)
def test_entrypoint_and_engine_script_when_run_outside_docker_then_healthy_and_metrics_served(script_env,
                                                                                               tmp_path):
    metrics_dir = Path(script_env["PROMETHEUS_MULTIPROC_DIR"])
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"from an earlier run")  # must not be summed in
    port = find_free_port()
    env = {**script_env, "ENGINE_HEALTH_PORT": str(port), "ENGINE_HEALTH_HOST": "127.0.0.1"}
    engine = BackgroundProcess(["bash", str(DOCKER / "entrypoint.sh"), str(DOCKER / "start-engine.sh"),
                                "--concurrency", "1", "--without-gossip", "--without-mingle"],
                               env=env, log_path=tmp_path / "engine.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthcheck(f"{url}/health") == 0, timeout=60, message=f"engine healthy ({engine.log_path})")
        assert not (metrics_dir / "counter_99999.db").exists()
        def with_heartbeat() -> str | None:
            text = fetch(f"{url}/metrics")
            return text if 'tinywindow_worker_heartbeat_timestamp_seconds{worker="engine@' in text else None

        body = wait_until(with_heartbeat, timeout=20, message="the engine's Celery heartbeat in /metrics")
        assert "tinywindow_kill_switch_active 0.0" in body
        assert 'tinywindow_scrape_collector_success{collector="queue_depth"} 1.0' in body
    finally:
        engine.stop()
    assert healthcheck(f"http://127.0.0.1:{port}/health") == 1  # and down when stopped


@pytest.mark.django_db(transaction=True)
def test_web_script_when_run_outside_docker_then_gunicorn_serves_health_and_multiprocess_metrics(
        script_env, tmp_path, redis_client):
    from tinywindow.redis_client import ENGINE_HEARTBEAT_KEY

    redis_client.set(ENGINE_HEARTBEAT_KEY, str(time.time()), ex=120)  # the web's /health asks for the engine
    port = find_free_port()
    env = {**script_env, "WEB_SETUP": "0", "WEB_BIND": f"127.0.0.1:{port}", "WEB_WORKERS": "2",
           "LOG_FORMAT": "json"}
    web = BackgroundProcess(["bash", str(DOCKER / "start-web.sh")], env=env, log_path=tmp_path / "web.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthcheck(f"{url}/health") == 0, timeout=60, message=f"web healthy ({web.log_path})")
        for _ in range(20):  # whichever gunicorn worker answers, one scrape counts them all
            assert healthcheck(f"{url}/health") == 0
        body = fetch(f"{url}/metrics")
        served = re.search(r'django_http_responses_total_by_status_total\{status="200"\} ([0-9.]+)', body)
        assert served and float(served.group(1)) >= 21
        assert "tinywindow_kill_switch_active 0.0" in body
    finally:
        web.stop()
    lines = [json.loads(line) for line in web.log().splitlines() if line.startswith("{")]
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"] for r in lines)
    assert any(r["logger"] == "gunicorn.access" and "GET /health" in r["message"] for r in lines)


@pytest.mark.django_db(transaction=True)
def test_beat_script_when_run_outside_docker_then_pidfile_healthcheck_passes(script_env, tmp_path):
    pidfile = tmp_path / "celerybeat.pid"
    env = {**script_env, "CELERY_BEAT_PIDFILE": str(pidfile)}
    beat = BackgroundProcess(["bash", str(DOCKER / "start-beat.sh")], env=env, log_path=tmp_path / "beat.log")
    try:
        wait_until(lambda: healthcheck("--pidfile", str(pidfile)) == 0, timeout=60,
                   message=f"beat pidfile ({beat.log_path})")
    finally:
        beat.stop()
    assert healthcheck("--pidfile", str(pidfile)) == 1


@pytest.mark.django_db(transaction=True)
def test_strategy_script_when_run_with_a_health_port_then_healthy_worker_that_does_not_claim_the_engine(
        script_env, tmp_path, redis_client):
    from tinywindow.redis_client import ENGINE_HEARTBEAT_KEY

    port = find_free_port()
    env = {**script_env, "STRATEGY_HEALTH_PORT": str(port), "STRATEGY_HEALTH_HOST": "127.0.0.1"}
    strategy = BackgroundProcess(["bash", str(DOCKER / "start-strategy.sh"), "--concurrency", "1",
                                  "--without-gossip", "--without-mingle"], env=env, log_path=tmp_path / "strategy.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthcheck(f"{url}/health") == 0, timeout=60,
                   message=f"strategy worker healthy ({strategy.log_path})")
        assert json.loads(fetch(f"{url}/health"))["role"] == "worker"
        assert "tinywindow_queue_depth" in fetch(f"{url}/metrics")
        assert redis_client.get(ENGINE_HEARTBEAT_KEY) is None  # the web must not think the engine is up
    finally:
        strategy.stop()


@pytest.mark.django_db(transaction=True)
def test_flower_script_when_run_outside_docker_then_healthcheck_answers(script_env, tmp_path):
    port = find_free_port()
    env = {**script_env, "FLOWER_PORT": str(port), "FLOWER_BASIC_AUTH": ""}
    flower = BackgroundProcess(["bash", str(DOCKER / "start-flower.sh"), "--address=127.0.0.1"], env=env,
                               log_path=tmp_path / "flower.log")
    try:
        wait_until(lambda: healthcheck(f"http://127.0.0.1:{port}/healthcheck") == 0, timeout=60,
                   message=f"flower /healthcheck ({flower.log_path})")
    finally:
        flower.stop()
