"""The operator commands as a user runs them (`python manage.py ...` in a subprocess, against
this run's test database): what they print, what they change, and their exit codes —
0 done, 2 usage or validation error (nothing changed), 1 database/Redis failure."""

from __future__ import annotations

import getpass
import json
import time

import pytest
from django_celery_beat.models import PeriodicTask

from safety.models import AuditEvent, CircuitBreakerEvent, KillSwitchEvent
from safety.services.breakers import breakers_check
from safety.services.kill_switch import kill_switch_engage, kill_switch_read_db
from tests.desk import open_stale_data_breaker
from tests.factories import make_agent
from tests.helpers import manage
from tinywindow.bootstrap import bootstrap
from tinywindow.embedded import find_free_port
from tinywindow.redis_client import ENGINE_HEARTBEAT_KEY, KILL_SWITCH_ACTIVE_KEY
from trading.models import Agent

ACTOR = f"cli:{getpass.getuser()}"


@pytest.fixture
def run(worker_env):
    """`run("killswitch", "status")` -> CompletedProcess, against the test database."""
    bootstrap(demo_agents=False)

    def invoke(*args: str, **env: str):
        result = manage(*args, env={**worker_env, **env})
        assert "Traceback" not in result.stderr, result.stderr
        return result

    return invoke


def _dead_database(worker_env) -> str:
    return f"postgres://postgres@127.0.0.1:{find_free_port()}/nothing"


# --- killswitch -------------------------------------------------------------------------------------


def test_killswitch_activate_when_valid_then_active_everywhere_with_cli_actor_and_exit_0(run, redis_client):
    result = run("killswitch", "activate", "--mode", "CLOSE_POSITIONS", "--reason", "Market crash")
    assert result.returncode == 0, result.stderr
    assert "ACTIVE (CLOSE_POSITIONS)" in result.stdout and "Market crash" in result.stdout
    assert kill_switch_read_db().active and redis_client.get(KILL_SWITCH_ACTIVE_KEY) == "true"
    event = KillSwitchEvent.objects.get()
    assert (event.action, event.mode, event.actor, event.source) == ("activate", "CLOSE_POSITIONS", ACTOR, "cli")
    assert AuditEvent.objects.filter(action="kill_switch.activate", actor=ACTOR, source="cli").exists()


@pytest.mark.parametrize("args", [
    ("killswitch", "activate", "--mode", "HALT_ONLY", "--reason", "   "),  # validation: blank reason
    ("killswitch", "activate", "--mode", "PANIC", "--reason", "x"),  # usage: unknown mode
    ("killswitch", "activate", "--mode", "HALT_ONLY"),  # usage: reason missing
    ("killswitch",),  # usage: no action
    ("killswitch", "explode"),
])
def test_killswitch_when_input_bad_then_exit_2_one_line_and_nothing_written(run, args):
    result = run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip()
    assert not KillSwitchEvent.objects.exists() and not kill_switch_read_db().active


def test_killswitch_when_reason_blank_then_message_names_the_field(run):
    result = run("killswitch", "activate", "--mode", "HALT_ONLY", "--reason", "")
    assert result.returncode == 2 and "reason: a reason is required" in result.stderr


def test_killswitch_deactivate_and_status_when_active_then_inactive_and_listed(run, redis_client):
    kill_switch_engage(mode="HALT_ONLY", reason="Emergency stop", actor="alice", source="10.0.0.1")
    status = run("killswitch", "status")
    assert status.returncode == 0 and "ACTIVE (HALT_ONLY)" in status.stdout and "Emergency stop" in status.stdout
    result = run("killswitch", "deactivate", "--reason", "all clear")
    assert result.returncode == 0 and "inactive" in result.stdout and "not reset" in result.stdout
    assert not kill_switch_read_db().active and redis_client.get(KILL_SWITCH_ACTIVE_KEY) == "false"
    event = KillSwitchEvent.objects.get(action="deactivate")
    assert (event.actor, event.source, event.reason) == (ACTOR, "cli", "all clear")
    body = json.loads(run("killswitch", "status", "--json").stdout)
    assert body["active"] is False and body["actor"] == ACTOR


def test_killswitch_when_database_unreachable_then_exit_1_clear_message(run, worker_env):
    result = run("killswitch", "status", DATABASE_URL=_dead_database(worker_env))
    assert result.returncode == 1
    assert "database unreachable" in result.stderr


# --- breakers ---------------------------------------------------------------------------------------


def test_breakers_status_and_reset_when_one_open_then_listed_and_closed_by_cli(run, redis_client):
    make_agent()
    breakers_check(kinds=["consecutive_losses"])  # the agent's own breaker: a closed row
    name = open_stale_data_breaker("BTC/USDT")
    status = run("breakers", "status")
    assert status.returncode == 0 and "Circuit breakers: OPEN" in status.stdout and name in status.stdout
    assert json.loads(run("breakers", "status", "--json").stdout)["status"] == "OPEN"
    only_open = run("breakers", "status", "--open", "--json").stdout
    assert [b["name"] for b in json.loads(only_open)["breakers"]] == [name]  # not the closed ones
    assert len(json.loads(run("breakers", "status", "--json").stdout)["breakers"]) > 1
    result = run("breakers", "reset", "--name", name, "--reason", "Market conditions stabilized")
    assert result.returncode == 0 and f"Reset: {name}" in result.stdout
    event = CircuitBreakerEvent.objects.get(action="reset")
    assert (event.breaker, event.actor, event.reason) == (name, ACTOR, "Market conditions stabilized")
    assert redis_client.get("tinywindow:circuit_breaker:status") == "CLOSED"
    assert "Circuit breakers: CLOSED" in run("breakers", "status").stdout
    assert "(none open)" in run("breakers", "status", "--open").stdout


@pytest.mark.parametrize(("args", "message"), [
    (("breakers", "reset", "--reason", " "), "reason: a reason is required"),
    (("breakers", "reset", "--name", "no_such_breaker", "--reason", "x"), "no circuit breaker named"),
    (("breakers", "reset"), "--reason"),
])
def test_breakers_reset_when_input_bad_then_exit_2_and_nothing_written(run, args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not CircuitBreakerEvent.objects.exists() and not AuditEvent.objects.exists()


# --- agents -----------------------------------------------------------------------------------------


def _task_enabled(agent: Agent) -> bool:
    return PeriodicTask.objects.get(name=f"tick-agent-{agent.pk}").enabled


def test_agents_list_pause_resume_when_by_name_then_schedule_follows_and_audited(run):
    agent = make_agent(name="cli-bot")
    listing = run("agents", "list")
    assert listing.returncode == 0 and "cli-bot" in listing.stdout and "active" in listing.stdout
    result = run("agents", "pause", "cli-bot", "--reason", "maintenance")
    assert result.returncode == 0 and "now paused" in result.stdout
    assert Agent.objects.get(pk=agent.pk).status == "paused" and not _task_enabled(agent)
    event = AuditEvent.objects.get(action="agent.pause")
    assert (event.actor, event.source, event.details["reason"]) == (ACTOR, "cli", "maintenance")
    assert json.loads(run("agents", "list", "--status", "paused", "--json").stdout)[0]["name"] == "cli-bot"
    assert "already paused" in run("agents", "pause", "cli-bot").stdout
    assert run("agents", "resume", "cli-bot").returncode == 0
    assert _task_enabled(agent)


@pytest.mark.parametrize(("args", "message"), [
    (("agents", "pause", "ghost"), "no agent named 'ghost' (agents: cli-bot)"),
    (("agents", "pause"), "name"),
    (("agents", "list", "--status", "sleeping"), "invalid choice"),
])
def test_agents_when_name_unknown_or_usage_bad_then_exit_2_and_nothing_changed(run, args, message):
    make_agent(name="cli-bot")
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert Agent.objects.get(name="cli-bot").status == "active" and not AuditEvent.objects.exists()


# --- status -----------------------------------------------------------------------------------------


def test_status_when_healthy_then_one_screen_and_exit_0(run, redis_client, fixed_price_feed):
    from tests.desk import make_book

    make_book(fixed_price_feed)  # leaves the kill switch active (it rejected an order)
    redis_client.set(ENGINE_HEARTBEAT_KEY, str(time.time()))  # what a running engine writes
    result = run("status")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Mode          PAPER" in out and "Health        OK" in out
    assert "Kill switch   ACTIVE (HALT_ONLY)" in out
    assert "Breakers      CLOSED" in out
    assert "Agents        2 active, 0 paused, 0 stopped" in out
    assert "Open orders   1" in out
    assert "PnL           equity" in out and "realized" in out


def test_status_when_engine_down_then_degraded_and_exit_1(run):
    result = run("status")
    assert result.returncode == 1
    assert "engine FAILED" in result.stdout and "degraded" in result.stderr


def test_status_when_database_unreachable_then_exit_1(run, worker_env):
    result = run("status", DATABASE_URL=_dead_database(worker_env))
    assert result.returncode == 1
    assert "database FAILED" in result.stdout


@pytest.mark.parametrize("command", ["killswitch", "breakers", "agents", "status"])
def test_help_when_asked_then_explains_actions_and_exit_codes(run, command):
    result = run(command, "--help")
    assert result.returncode == 0 and "exit code" in " ".join(result.stdout.split()).lower()
