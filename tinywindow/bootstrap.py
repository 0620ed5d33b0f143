"""First-run setup shared by `manage.py bootstrap`, `up` and the container start scripts.

Idempotent: running it again changes nothing that exists.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from safety.models import KillSwitchState
from safety.services.kill_switch import kill_switch_mirror
from tinywindow.permissions import ADMIN, OPERATOR, VIEWER
from tinywindow.redis_client import BREAKER_STATUS_KEY, get_redis
from trading.models import Agent
from trading.services.agents import agent_create

logger = logging.getLogger(__name__)

DEMO_AGENTS = (
    {"name": "demo-sma-btc", "strategy": "trading.strategies.sma_cross.SmaCross",
     "params": {"fast": 5, "slow": 20, "exposure": "0.5"}, "symbols": ["BTC/USDT"], "capital": Decimal("10000")},
    {"name": "demo-sma-eth", "strategy": "trading.strategies.sma_cross.SmaCross",
     "params": {"fast": 3, "slow": 12, "exposure": "0.8"}, "symbols": ["ETH/USDT"], "capital": Decimal("10000")},
    {"name": "demo-sma-sol", "strategy": "trading.strategies.sma_cross.SmaCross",
     "params": {"fast": 8, "slow": 30, "exposure": "1"}, "symbols": ["SOL/USDT"], "capital": Decimal("5000")},
)


@dataclass
class BootstrapReport:
    admin_username: str = ""
    admin_password_generated: str = ""  # only when created now with a generated password
    demo_agents_created: list[str] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)


def _ensure_groups() -> None:
    read = Permission.objects.filter(codename__startswith="view_")
    for name in (VIEWER, OPERATOR, ADMIN):
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*read)
    Group.objects.get(name=ADMIN).permissions.add(*Permission.objects.filter(content_type__app_label="trading"))


def _ensure_admin(report: BootstrapReport) -> None:
    user_model = get_user_model()
    username = settings.ADMIN_USERNAME
    report.admin_username = username
    if user_model.objects.filter(username=username).exists():
        return
    password = settings.ADMIN_PASSWORD or secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username=username, email="", password=password)
    if not settings.ADMIN_PASSWORD:
        report.admin_password_generated = password


def _ensure_periodic(name: str, task: str, every: int, queue: str) -> None:
    schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.update_or_create(
        name=name,
        defaults={"task": task, "interval": schedule, "queue": queue, "kwargs": json.dumps({}),
                  "expire_seconds": every, "enabled": True},
    )


@transaction.atomic
def bootstrap(*, demo_agents: bool) -> BootstrapReport:
    report = BootstrapReport()
    _ensure_groups()
    _ensure_admin(report)
    KillSwitchState.objects.get_or_create(pk=KillSwitchState.SINGLETON_ID)
    _ensure_periodic("risk-snapshot", "trading.tasks.take_portfolio_snapshot", settings.RISK_SNAPSHOT_SECONDS,
                     "default")
    _ensure_periodic("agent-performance", "trading.tasks.update_agent_performance", 300, "default")
    _ensure_periodic("check-breakers", "safety.tasks.check_breakers", settings.BREAKER_CHECK_SECONDS, "safety")
    report.schedules = ["risk-snapshot", "agent-performance", "check-breakers"]
    if demo_agents and not Agent.objects.exists():
        for spec in DEMO_AGENTS:
            agent_create(**spec, timeframe="5s", tick_seconds=settings.DEMO_TICK_SECONDS)
            report.demo_agents_created.append(spec["name"])
    transaction.on_commit(_mirror_safety_state)
    return report


def _mirror_safety_state() -> None:
    kill_switch_mirror()
    try:
        get_redis().setnx(BREAKER_STATUS_KEY, "CLOSED")
    except Exception as exc:  # Redis down at bootstrap: the safety sweep restores it later
        logger.warning("could not initialise breaker status in Redis: %s", exc)
