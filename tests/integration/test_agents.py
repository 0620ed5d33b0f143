"""Agent lifecycle and its beat schedule (PeriodicTask), through the services and the admin."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from safety.models import AuditEvent
from tests.factories import make_agent
from tinywindow.exceptions import ValidationError
from trading.feeds.base import Candle, floor_time
from trading.models import Agent, Order, Position
from trading.services.agents import agent_delete, agent_set_status, agent_tick, agent_update
from trading.services.market_data import candles_store
from trading.services.orders import order_create, order_execute

pytestmark = pytest.mark.django_db
D = Decimal


def _task(agent: Agent) -> PeriodicTask:
    return PeriodicTask.objects.get(name=f"tick-agent-{agent.pk}")


# -- services ------------------------------------------------------------------------------------


def test_create_when_valid_then_enabled_periodic_task_on_strategy_queue_expiring_after_interval():
    agent = make_agent(tick_seconds=7)
    task = _task(agent)
    assert agent.periodic_task_id == task.pk
    assert task.enabled and task.queue == "strategy" and task.task == "trading.tasks.tick_agent"
    assert (task.interval.every, task.interval.period) == (7, "seconds")
    assert task.expire_seconds == 7
    assert task.kwargs == f'{{"agent_id": {agent.pk}}}'


def test_pause_when_active_then_task_disabled_and_audited():
    agent = make_agent()
    agent_set_status(agent=agent, status="paused", actor="alice", source="10.0.0.1")
    assert Agent.objects.get(pk=agent.pk).status == "paused"
    assert not _task(agent).enabled
    event = AuditEvent.objects.get(action="agent.pause")
    assert (event.actor, event.source, event.details["from"], event.details["to"]) == (
        "alice", "10.0.0.1", "active", "paused")


def test_resume_when_paused_then_task_enabled_again():
    agent = make_agent()
    agent_set_status(agent=agent, status="paused", actor="a", source="s")
    agent_set_status(agent=agent, status="active", actor="a", source="s")
    assert _task(agent).enabled
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == ["agent.pause", "agent.resume"]


def test_stop_when_active_then_task_disabled_and_tick_does_nothing(fixed_price_feed):
    agent = make_agent()
    agent_set_status(agent=agent, status="stopped", actor="a", source="s")
    assert not _task(agent).enabled
    fixed_price_feed.path = [D(p) for p in ("90", "95", "100", "105", "110")]
    assert agent_tick(agent_id=agent.pk).order_ids == []
    assert not Order.objects.exists()


def test_set_status_when_unchanged_or_unknown_then_nothing_written(caplog):
    agent = make_agent()
    agent_set_status(agent=agent, status="active", actor="a", source="s")
    assert "already active" in caplog.text
    with pytest.raises(ValidationError) as info:
        agent_set_status(agent=agent, status="sleeping", actor="a", source="s")
    assert info.value.field == "status"
    assert not AuditEvent.objects.exists()


def test_update_when_tick_seconds_and_params_change_then_schedule_follows_and_audited():
    agent = make_agent(tick_seconds=5)
    agent = agent_update(agent=agent, actor="bob", source="cli", tick_seconds=11, params={"fast": 3, "slow": 9})
    task = _task(agent)
    assert (task.interval.every, task.expire_seconds) == (11, 11)
    # Params are stored as the strategy normalises them (Decimal as an exact string).
    assert Agent.objects.get(pk=agent.pk).params == {"fast": 3, "slow": 9, "exposure": "0.5"}
    event = AuditEvent.objects.get(action="agent.update")
    assert event.details["before"]["tick_seconds"] == 5 and event.details["after"]["tick_seconds"] == 11


def test_update_when_invalid_then_validation_error_names_field_and_nothing_changes():
    agent = make_agent()
    for changes, field in (
        ({"params": {"fast": 9, "slow": 3}}, "slow"),
        ({"strategy": "trading.strategies.nope.Nope"}, "strategy"),
        ({"timeframe": "7m"}, "timeframe"),
        ({"capital": "-5"}, "capital"),
        ({"status": "paused"}, "status"),
        ({"feed": "carrier-pigeon"}, "feed"),
        ({"mode": "live"}, "mode"),  # PAPER_TRADING_MODE is on in tests
        ({"last_tick_at": None}, "last_tick_at"),
    ):
        with pytest.raises(ValidationError) as info:
            agent_update(agent=agent, **changes)
        assert info.value.field == field, changes
    assert Agent.objects.get(pk=agent.pk).params == agent.params
    assert not AuditEvent.objects.exists()


def test_update_when_dropping_a_held_symbol_then_refused(fixed_price_feed):
    agent = make_agent(symbols=["BTC/USDT", "ETH/USDT"])
    order_execute(order_id=order_create(agent=agent, symbol="ETH/USDT", side="buy", quantity=D("1")).pk)
    with pytest.raises(ValidationError, match="position 1 ETH/USDT") as info:
        agent_update(agent=agent, symbols=["BTC/USDT"])
    assert info.value.field == "symbols"
    assert agent_update(agent=agent, symbols=["ETH/USDT"]).symbols == ["ETH/USDT"]  # BTC was not held


def test_delete_when_never_traded_then_agent_and_task_removed_and_audited():
    agent = make_agent()
    task_id = agent.periodic_task_id
    agent_delete(agent=agent, actor="carol", source="s")
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not PeriodicTask.objects.filter(pk=task_id).exists()
    assert AuditEvent.objects.get(action="agent.delete").actor == "carol"


def test_delete_when_agent_has_orders_then_refused_and_history_kept(fixed_price_feed):
    agent = make_agent()
    order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("0.1"))
    with pytest.raises(ValidationError, match="stop it instead"):
        agent_delete(agent=agent)
    assert Agent.objects.filter(pk=agent.pk).exists() and _task(agent)


# -- market data checks in the tick --------------------------------------------------------------


def _store_minutes(exchange: str, symbol: str, opens: list) -> None:
    candles_store(exchange=exchange, symbol=symbol, timeframe="1m", candles=[
        Candle(ts, D(100 + i), D(101 + i), D(99 + i), D(100 + i), D(1)) for i, ts in enumerate(opens)
    ])


def test_tick_when_replay_data_is_old_then_no_order_and_reason_says_stale():
    now = timezone.now()
    last_open = floor_time(now, "1m") - timedelta(minutes=30)
    _store_minutes("binance", "BTC/USDT", [last_open - timedelta(minutes=i) for i in range(10, -1, -1)])
    agent = make_agent(feed="replay:binance", timeframe="1m", params={"fast": 2, "slow": 4, "exposure": "0.5"})
    result = agent_tick(agent_id=agent.pk, now=now)
    assert result.order_ids == [] and result.unhealthy == ["BTC/USDT"]
    age = (now - (last_open + timedelta(minutes=1))).total_seconds()
    assert result.decisions == [
        f"BTC/USDT: no decision, market data from replay:binance stale: newest candle closed {age:.0f}s ago "
        "(limit 120s)"
    ]
    assert "stale" in Agent.objects.get(pk=agent.pk).last_decision
    assert not Order.objects.exists()


def test_tick_when_replay_data_has_a_hole_then_no_order_and_reason_says_gapped():
    now = timezone.now()
    newest = floor_time(now, "1m") - timedelta(minutes=1)
    opens = [newest - timedelta(minutes=i) for i in (7, 6, 5, 2, 1, 0)]  # 3, 4 and 5 minutes back are missing
    _store_minutes("binance", "BTC/USDT", opens)
    agent = make_agent(feed="replay:binance", timeframe="1m", params={"fast": 2, "slow": 4, "exposure": "0.5"})
    result = agent_tick(agent_id=agent.pk, now=now)
    assert result.order_ids == []
    assert "gapped: 2 candle(s) missing in 1 gap(s)" in result.decisions[0]


def test_tick_when_replay_data_fresh_and_rising_then_buys():
    now = timezone.now()
    newest = floor_time(now, "1m") - timedelta(minutes=1)
    _store_minutes("binance", "BTC/USDT", [newest - timedelta(minutes=i) for i in range(5, -1, -1)])
    agent = make_agent(feed="replay:binance", timeframe="1m", params={"fast": 2, "slow": 4, "exposure": "0.5"})
    result = agent_tick(agent_id=agent.pk, now=now)
    assert len(result.order_ids) == 1 and result.unhealthy == []
    assert "hold 50% long" in Order.objects.get().decision_reason


# -- the admin goes through the services ---------------------------------------------------------


@pytest.fixture
def admin_client(django_user_model) -> Client:
    user = django_user_model.objects.create_superuser("root", "", "pw-for-tests")
    client = Client()
    client.force_login(user)
    return client


def _form(**overrides) -> dict:
    data = {
        "name": "admin-made", "strategy": "trading.strategies.rsi_reversion.RsiReversion",
        "params": '{"period": 6, "oversold": "35", "exit_level": "55"}', "symbols": "ETH/USDT",
        "timeframe": "5s", "exchange": "paper", "feed": "synthetic", "mode": "paper", "status": "active",
        "capital": "5000", "tick_seconds": "5",
    }
    data.update(overrides)
    return data


def test_admin_add_when_valid_then_agent_and_enabled_task_created(admin_client):
    response = admin_client.post("/admin/trading/agent/add/", _form())
    assert response.status_code == 302, response.content.decode()[:3000]
    agent = Agent.objects.get(name="admin-made")
    assert _task(agent).enabled and agent.periodic_task_id == _task(agent).pk
    assert agent.params == {"period": 6, "oversold": "35", "exit_level": "55", "exposure": "0.5"}


def test_admin_add_when_params_invalid_then_form_error_and_nothing_created(admin_client):
    response = admin_client.post("/admin/trading/agent/add/", _form(params='{"period": 6, "exit_level": "10"}'))
    assert response.status_code == 200
    assert "exit_level (10) must be greater than oversold (30)" in response.content.decode()
    assert not Agent.objects.exists() and not PeriodicTask.objects.filter(name__startswith="tick-agent-").exists()


def test_admin_change_when_status_paused_then_task_disabled_and_audited(admin_client):
    admin_client.post("/admin/trading/agent/add/", _form())
    agent = Agent.objects.get(name="admin-made")
    response = admin_client.post(f"/admin/trading/agent/{agent.pk}/change/",
                                 _form(status="paused", tick_seconds="9"))
    assert response.status_code == 302
    task = _task(agent)
    assert not task.enabled and task.interval.every == 9
    assert set(AuditEvent.objects.values_list("action", flat=True)) == {"agent.create", "agent.update", "agent.pause"}
    assert AuditEvent.objects.get(action="agent.pause").actor == "root"


def test_admin_actions_when_pause_then_resume_then_task_follows(admin_client):
    agents = [make_agent(), make_agent()]
    ids = [str(a.pk) for a in agents]
    admin_client.post("/admin/trading/agent/", {"action": "pause_agents", "_selected_action": ids})
    assert not any(_task(a).enabled for a in agents)
    admin_client.post("/admin/trading/agent/", {"action": "resume_agents", "_selected_action": ids})
    assert all(_task(a).enabled for a in agents)
    assert AuditEvent.objects.filter(action="agent.resume").count() == 2


def test_admin_delete_when_never_traded_then_task_removed(admin_client):
    agent = make_agent()
    response = admin_client.post(f"/admin/trading/agent/{agent.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Agent.objects.exists()
    assert not PeriodicTask.objects.filter(name=f"tick-agent-{agent.pk}").exists()


def test_admin_bulk_delete_when_selected_then_each_through_the_service(admin_client):
    agents = [make_agent(), make_agent()]
    admin_client.post("/admin/trading/agent/", {"action": "delete_selected", "post": "yes",
                                                "_selected_action": [str(a.pk) for a in agents]})
    assert not Agent.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="tick-agent-").exists()
    assert AuditEvent.objects.filter(action="agent.delete").count() == 2
    assert not Position.objects.exists()
