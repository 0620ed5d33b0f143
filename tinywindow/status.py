"""The desk's one-glance state: mode, kill switch, breakers, agents, equity, open orders.

One read shared by `GET /api/status`, the admin banner and `manage.py status`, so the three
never disagree. Reads only; the kill switch and breakers come from PostgreSQL (authoritative).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from safety.models import CircuitBreakerState
from safety.services.breakers import aggregate_status, breaker_states
from safety.services.kill_switch import KillSwitchView, kill_switch_state
from tinywindow.exceptions import SafetyStateUnknown
from tinywindow.rows import constant_in
from trading.models import PortfolioSnapshot


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


# The snapshot's totals (what /api/status shows; its lists stay in the database), in the model's
# field order, as Model.from_db expects them.
_SNAPSHOT_FIELDS = tuple(f.attname for f in PortfolioSnapshot._meta.concrete_fields
                         if f.name not in ("positions", "agents"))
_KILL_SWITCH_FIELDS = ("active", "mode", "reason", "actor", "changed_at")


@functools.cache
def _agent_statuses() -> tuple[str, ...]:
    """AgentStatus.values, once: Django builds the list (with each label) on every access."""
    from trading.models import AgentStatus

    return tuple(AgentStatus.values)


@functools.cache
def _status_sql() -> str:
    """The whole status in one round trip (issue 10: it was five queries, each a round trip and
    an ORM compile): the breaker states other than CLOSED, the kill-switch row, agents by status,
    the open-order count and the latest snapshot's totals. Table and column names come from the
    models; the fixed sets of states are written into the SQL, so that the partial indexes made
    for them serve the prepared statement too (tinywindow.rows.constant_in). At 12,000 agents
    (10,000 breaker states and open orders) it took 4.3-4.6 ms when it read every breaker state
    and grouped the agents, 2.1-2.4 ms now (docs/scaling.md)."""
    from safety.models import BREAKER_NOT_CLOSED, KillSwitchState
    from trading.models import Agent, Order
    from trading.order_states import OPEN_STATUSES

    STATUS = '"status"'  # noqa: N806 - a column's quoted name, as in the SQL below
    snap = ", ".join(f'"{PortfolioSnapshot._meta.get_field(f).column}"' for f in _SNAPSHOT_FIELDS)
    kill = ", ".join(f'ks."{KillSwitchState._meta.get_field(f).column}"' for f in _KILL_SWITCH_FIELDS)
    # One pass over the agents, a count per status: cheaper than GROUP BY's hash of every row.
    agent_counts = ", ".join(f"count(*) FILTER (WHERE {constant_in(STATUS, [status])})"
                             for status in _agent_statuses())
    return f"""
        SELECT ARRAY(SELECT DISTINCT "state" FROM "{CircuitBreakerState._meta.db_table}"
                     WHERE {constant_in('"state"', BREAKER_NOT_CLOSED)}),
               ks."id", {kill},
               (SELECT count(*) FROM "{Order._meta.db_table}" WHERE {constant_in(STATUS, OPEN_STATUSES)}),
               agent_counts.*, snap.*
        FROM (SELECT 1) AS one
        LEFT JOIN "{KillSwitchState._meta.db_table}" AS ks ON ks."id" = %s
        CROSS JOIN (SELECT {agent_counts} FROM "{Agent._meta.db_table}") AS agent_counts
        LEFT JOIN LATERAL (SELECT {snap} FROM "{PortfolioSnapshot._meta.db_table}"
                           ORDER BY "created_at" DESC, "id" DESC LIMIT 1) AS snap ON true
    """  # noqa: S608 - only names from the models' meta and the code's own state names are formatted in


def system_status() -> SystemStatus:
    """Everything from the database, in one query (two while a breaker is not closed: its row and
    config). Raises SafetyStateUnknown when it cannot be read."""
    from django.db import connection

    from safety.models import KillSwitchState

    try:
        with connection.cursor() as cursor:
            cursor.execute(_status_sql(), [KillSwitchState.SINGLETON_ID])
            row = cursor.fetchone()
        statuses = _agent_statuses()
        status_count = len(statuses)
        states, kill_id, kill, open_orders = row[0], row[1], row[2:7], row[7]
        counts, snap = row[8:8 + status_count], row[8 + status_count:]
        open_breakers = breaker_states(not_closed=True) if states else []
        return SystemStatus(
            mode=trading_mode(),
            kill_switch=(KillSwitchView(active=False, mode="", reason="") if kill_id is None else
                         KillSwitchView(**dict(zip(_KILL_SWITCH_FIELDS, kill, strict=True)))),
            breaker_status=aggregate_status(states),
            open_breakers=open_breakers,
            agents=dict(zip(statuses, counts, strict=True)),
            # A model instance with the lists deferred, as portfolio_snapshot_latest(totals_only=True) gives.
            latest_snapshot=(None if snap[0] is None else
                             PortfolioSnapshot.from_db(connection.alias, list(_SNAPSHOT_FIELDS), list(snap))),
            open_orders=open_orders,
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
        not_closed = breaker_states(not_closed=True)
    except (DatabaseError, SafetyStateUnknown) as exc:
        return DeskBanner(mode=mode, level="danger", kill_switch_active=None,
                          error=f"safety state unknown: {str(exc).splitlines()[0][:200]}")
    status = aggregate_status(s.state for s in not_closed)
    level = "danger" if view.active else ("warning" if not_closed else "ok")
    return DeskBanner(mode=mode, level=level, kill_switch_active=view.active, kill_switch_mode=view.mode,
                      kill_switch_reason=view.reason, breaker_status=status,
                      open_breakers=tuple(f"{s.name} {s.state}" for s in not_closed))
