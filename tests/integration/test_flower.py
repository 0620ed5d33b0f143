"""Flower: basic auth from FLOWER_BASIC_AUTH (through the environment, never the command line),
and it shows TinyWindow's workers, queues and task names."""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from django.core.management.base import CommandError

from tests.conftest import wait_for_worker
from tests.helpers import BackgroundProcess, wait_until
from tinywindow.embedded import find_free_port
from tinywindow.management.commands.up import Command as UpCommand
from tinywindow.management.commands.up import flower_basic_auth

SECRET = "s3cret-flower-pw"


def _get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize(("raw", "expected"), [
    (None, None), ("", None), ("  ", None), ("ops:pw", "ops:pw"), (" ops:pw , desk:pw2 ", "ops:pw,desk:pw2"),
])
def test_basic_auth_value_when_valid_or_empty_then_normalised(raw, expected):
    assert flower_basic_auth(raw) == expected


@pytest.mark.parametrize("raw", ["ops", "ops:", ":pw", "ops:pw,"])
def test_basic_auth_value_when_malformed_then_clear_error(raw):
    with pytest.raises(CommandError, match="FLOWER_BASIC_AUTH must be user:password"):
        flower_basic_auth(raw)


def _flower_role(tmp_path: Path, env: dict[str, str], auth: str | None):
    command = UpCommand()
    command.flower_auth = auth
    opts = {"web_port": 1, "engine_port": 2, "flower_port": 3, "host": "127.0.0.1", "web_workers": 1,
            "strategy_workers": 1, "no_flower": False}
    roles = {role.name: role for role in command._roles(env, tmp_path, opts)}
    return roles["flower"]


def test_up_when_basic_auth_set_then_flower_gets_it_in_env_not_argv(tmp_path):
    flower = _flower_role(tmp_path, {"FLOWER_BASIC_AUTH": f"ops:{SECRET}", "PATH": "/usr/bin"}, f"ops:{SECRET}")
    assert flower.env["FLOWER_BASIC_AUTH"] == f"ops:{SECRET}"
    assert not any(SECRET in arg or "basic" in arg.lower() for arg in flower.argv)


def test_up_when_basic_auth_empty_then_not_passed_to_flower(tmp_path):
    flower = _flower_role(tmp_path, {"FLOWER_BASIC_AUTH": "", "PATH": "/usr/bin"}, None)
    assert "FLOWER_BASIC_AUTH" not in flower.env


def test_flower_when_basic_auth_set_then_login_required_and_our_workers_queues_tasks_shown(
        worker_env, start_worker, tmp_path):
    worker = start_worker("strategy,default", name="flowerprobe")
    port = find_free_port()
    env = {**worker_env, "FLOWER_BASIC_AUTH": f"ops:{SECRET}"}
    flower = BackgroundProcess([sys.executable, "-m", "celery", "-A", "tinywindow", "flower", f"--port={port}",
                                "--address=127.0.0.1"], env=env, log_path=tmp_path / "flower.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _get(f"{base}/healthcheck")[0] == 200, timeout=60, message="flower up")
        assert SECRET not in " ".join(psutil.Process(flower.process.pid).cmdline())
        assert _get(f"{base}/")[0] == 401
        assert _get(f"{base}/", auth="ops:wrong")[0] == 401
        assert _get(f"{base}/", auth=f"ops:{SECRET}")[0] == 200
        wait_for_worker(worker)

        def workers() -> dict:
            status, body = _get(f"{base}/api/workers?refresh=1", auth=f"ops:{SECRET}")
            found = json.loads(body) if status == 200 else {}
            return {name: info for name, info in found.items() if name.startswith("flowerprobe@")
                    and info.get("registered") and info.get("active_queues")}

        info = next(iter(wait_until(workers, timeout=60, message="flower sees the worker").values()))
        assert {"trading.tasks.tick_agent", "safety.tasks.check_breakers"} <= set(info["registered"])
        assert {q["name"] for q in info["active_queues"]} == {"strategy", "default"}
    finally:
        flower.stop()
