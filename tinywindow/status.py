"""The desk's one-glance state: mode, kill switch, breakers, agents, equity, open orders.

One read shared by `GET /api/status`, the admin banner and `manage.py status`, so the three
never disagree. Reads only; the kill switch and breakers come from PostgreSQL (authoritative).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from safety.models import BreakerStatus, CircuitBreakerState
from safety.services.breakers import aggregate_status, breaker_states
from safety.services.kill_switch import KillSwitchView, kill_switch_read_db, kill_switch_state
from tinywindow.exceptions import SafetyStateUnknown
from trading.models import PortfolioSnapshot
from trading.selectors import agent_status_counts, orders_open_count, portfolio_snapshot_latest


def trading_mode() -> str:
    """PAPER or LIVE, from PAPER_TRADING_MODE."""
    return "PAPER" if settings.PAPER_TRADING_MODE else "LIVE"


@dataclass(frozen=True)
class SystemStatus:
    mode: str
    kill_switch: KillSwitchView
    breaker_status: str
    open_breakers: list[CircuitBreakerState]
    agents: dict[str, int]
    latest_snapshot: PortfolioSnapshot | None
    open_orders: int
    at: datetime = field(default_factory=timezone.now)


def system_status() -> SystemStatus:
    """Everything from the database. Raises SafetyStateUnknown when it cannot be read."""
    try:
        states = breaker_states()
        return SystemStatus(
            mode=trading_mode(),
            kill_switch=kill_switch_read_db(),
            breaker_status=aggregate_status(s.state for s in states),
            open_breakers=[s for s in states if s.state != BreakerStatus.CLOSED],
            agents=agent_status_counts(),
            latest_snapshot=portfolio_snapshot_latest(totals_only=True),
            open_orders=orders_open_count(),
        )
    except DatabaseError as exc:
        raise SafetyStateUnknown(f"system status unknown: database unreachable ({exc})") from exc


@dataclass(frozen=True)
class DeskBanner:
    """What the admin banner shows. `level`: ok, warning (a breaker not closed), danger (kill
    switch active, or the state cannot be read: fail closed, show it red)."""

    mode: str
    level: str
    kill_switch_active: bool | None
    kill_switch_mode: str = ""
    kill_switch_reason: str = ""
    breaker_status: str = ""
    open_breakers: tuple[str, ...] = ()
    error: str = ""


def desk_banner() -> DeskBanner:
    """The banner's state: the kill switch's fast read (Redis, else PostgreSQL) and the breakers
    that are not closed (one query). Never raises: an unreadable state is shown as such, in red."""
    mode = trading_mode()
    try:
        view = kill_switch_state()
        not_closed = [s for s in breaker_states() if s.state != BreakerStatus.CLOSED]
    except (DatabaseError, SafetyStateUnknown) as exc:
        return DeskBanner(mode=mode, level="danger", kill_switch_active=None,
                          error=f"safety state unknown: {str(exc).splitlines()[0][:200]}")
    status = aggregate_status(s.state for s in not_closed)
    level = "danger" if view.active else ("warning" if not_closed else "ok")
    return DeskBanner(mode=mode, level=level, kill_switch_active=view.active, kill_switch_mode=view.mode,
                      kill_switch_reason=view.reason, breaker_status=status,
                      open_breakers=tuple(f"{s.name} {s.state}" for s in not_closed))
