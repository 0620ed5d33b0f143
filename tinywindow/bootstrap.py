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

from safety.models import KillSwitchState, RiskLimit
from safety.services.breakers import breakers_ensure_defaults
from safety.services.mirror import safety_mirror_sync
from tinywindow.permissions import ADMIN, OPERATOR, VIEWER
from trading.models import Agent
from trading.services.agents import agent_create, agent_schedules_resync

logger = logging.getLogger(__name__)

# Three strategies, each tuned to trade on the synthetic feed's 5 s candles within a couple of
# minutes of `up`. Measured with SyntheticFeed(seed=42) and a 5 s tick over 4 windows of 3 h
# (orders per hour; wait for the agent's first order from 48 start times: median, 90th pct):
#   demo-sma-btc        SMA(5) above SMA(20)             31/h (31-32)   first order 8 s, p90 2.6 min
#   demo-rsi-eth        RSI(6) < 40 long, > 55 flat      42/h (37-47)   first order 35 s, p90 4.7 min
#   demo-donchian-sol   12-bar high in, 6-bar low out    26/h (20-33)   first order 60 s, p90 4.7 min
# Together: the first order of the demo comes at once (median), within 60 s at worst.
# tests/unit/test_demo_agents.py keeps them trading.
DEMO_AGENTS = (
    {"name": "demo-sma-btc", "strategy": "trading.strategies.sma_cross.SmaCross",
     "params": {"fast": 5, "slow": 20, "exposure": "0.5"}, "symbols": ["BTC/USDT"], "capital": Decimal("10000")},
    {"name": "demo-rsi-eth", "strategy": "trading.strategies.rsi_reversion.RsiReversion",
     "params": {"period": 6, "oversold": "40", "exit_level": "55", "exposure": "0.8"}, "symbols": ["ETH/USDT"],
     "capital": Decimal("10000")},
    # 0.95, not 1: the paper venue holds funds, and all of the capital could not also pay the fee.
    {"name": "demo-donchian-sol", "strategy": "trading.strategies.donchian_breakout.DonchianBreakout",
     "params": {"entry": 12, "exit": 6, "exposure": "0.95"}, "symbols": ["SOL/USDT"], "capital": Decimal("5000")},
)


# Every agent's default limits (the global risk_limits row); edited in the admin.
DEFAULT_GLOBAL_LIMITS = {
    "max_order_notional": Decimal("50000"),
    "max_position_notional": Decimal("100000"),
    "max_gross_exposure": Decimal("250000"),
    "max_open_orders": 50,
    "max_orders_per_minute": 120,
    "price_band": Decimal("0.05"),
}


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
    """Create the schedule if it is missing. An existing one keeps what the operator may have
    changed in the admin (interval, enabled, expiry); only the code-owned task path and queue
    are corrected."""
    existing = PeriodicTask.objects.filter(name=name).first()
    if existing is not None:
        if (existing.task, existing.queue) != (task, queue):
            existing.task, existing.queue = task, queue
            existing.save(update_fields=["task", "queue"])
        return
    schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name=name, task=task, interval=schedule, queue=queue, kwargs=json.dumps({}),
                                expire_seconds=every, enabled=True)


@transaction.atomic
def bootstrap(*, demo_agents: bool) -> BootstrapReport:
    report = BootstrapReport()
    _ensure_groups()
    _ensure_admin(report)
    KillSwitchState.objects.get_or_create(pk=KillSwitchState.SINGLETON_ID)
    breakers_ensure_defaults(recovery_seconds=settings.BREAKER_RECOVERY_SECONDS)
    if not RiskLimit.objects.filter(agent__isnull=True).exists():
        RiskLimit.objects.create(**DEFAULT_GLOBAL_LIMITS)
    _ensure_periodic("risk-snapshot", "trading.tasks.take_portfolio_snapshot", settings.RISK_SNAPSHOT_SECONDS,
                     "default")
    _ensure_periodic("agent-performance", "trading.tasks.update_agent_performance",
                     settings.AGENT_PERFORMANCE_SECONDS, "default")
    _ensure_periodic("snapshot-thinning", "trading.tasks.thin_portfolio_snapshots", settings.SNAPSHOT_THIN_SECONDS,
                     "default")
    _ensure_periodic("check-breakers", "safety.tasks.check_breakers", settings.BREAKER_CHECK_SECONDS, "safety")
    # Resting limit orders and the rest of partly filled orders trade on this pass (paper venue).
    _ensure_periodic("paper-matching", "paper.tasks.match_resting_orders", settings.PAPER_MATCH_SECONDS,
                     "execution")
    # The books against the venues (trading/services/reconcile.py); engines also run it at start.
    _ensure_periodic("reconcile", "trading.tasks.reconcile", settings.RECONCILE_SECONDS, "execution")
    # The runbook's RPO: a pg_dump every BACKUP_SECONDS (tinywindow/backup.py).
    _ensure_periodic("backup", "tinywindow.tasks.backup_database", settings.BACKUP_SECONDS, "default")
    # Batch ticks of agents on slow timeframes (trading/services/ticks.py): every second, the batches due.
    _ensure_periodic("dispatch-agent-ticks", "trading.tasks.dispatch_agent_ticks", 1, "strategy")
    agent_schedules_resync()  # AGENT_TICK_BATCH_MIN_SECONDS may have changed since the last start
    report.schedules = ["risk-snapshot", "agent-performance", "snapshot-thinning", "check-breakers",
                        "paper-matching", "reconcile", "backup", "dispatch-agent-ticks"]
    if demo_agents and not Agent.objects.exists():
        for spec in DEMO_AGENTS:
            agent_create(**spec, timeframe="5s", tick_seconds=settings.DEMO_TICK_SECONDS)
            report.demo_agents_created.append(spec["name"])
    transaction.on_commit(_mirror_safety_state)
    return report


def _mirror_safety_state() -> None:
    try:
        safety_mirror_sync(force=True)
    except Exception as exc:  # Redis down at bootstrap: the engine restores the mirror later
        logger.warning("could not mirror the safety state to Redis: %s", exc)
