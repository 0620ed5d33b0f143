"""The kill switch: stop all trading at once.

State is authoritative in PostgreSQL (`kill_switch_state`, one row) and mirrored to Redis
(`tinywindow:kill_switch:active|mode|reason`) for fast reads by ticks, health and operators.

The guarantee "once the activation call returns, no order reaches a venue" rests on one
PostgreSQL advisory lock, the *trading gate*: every venue send holds it shared from the
moment it re-reads the kill-switch row until the venue has answered
(`trading.services.gate.venue_send_permit`); activation takes it exclusively before it
writes. So activation waits for sends already in flight and every later send sees the new
state. PostgreSQL queues lock requests in order, so a stream of sends cannot starve it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import redis
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from safety.models import KillSwitchAction, KillSwitchEvent, KillSwitchMode, KillSwitchState
from safety.services.audit import audit_record
from safety.services.notify import notify_event
from tinywindow.exceptions import SafetyStateUnknown, ValidationError
from tinywindow.redis_client import (
    KILL_SWITCH_ACTIVE_KEY,
    KILL_SWITCH_MODE_KEY,
    KILL_SWITCH_REASON_KEY,
    get_redis,
)

logger = logging.getLogger(__name__)

# pg_advisory_lock key of the trading gate ("tw" + 1).
TRADING_GATE_LOCK_KEY = 0x7477_0001
MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class KillSwitchView:
    active: bool
    mode: str
    reason: str
    actor: str = ""
    changed_at: datetime | None = None
    source_of_truth: str = "database"  # or "redis"


def _state_row_for_update() -> KillSwitchState:
    state, _ = KillSwitchState.objects.select_for_update().get_or_create(pk=KillSwitchState.SINGLETON_ID)
    return state


def kill_switch_read_db() -> KillSwitchView:
    """The authoritative state. Used under the trading gate before every venue send."""
    state = KillSwitchState.objects.filter(pk=KillSwitchState.SINGLETON_ID).first()
    if state is None:
        return KillSwitchView(active=False, mode="", reason="")
    return KillSwitchView(
        active=state.active, mode=state.mode, reason=state.reason, actor=state.actor, changed_at=state.changed_at
    )


def kill_switch_mirror(view: KillSwitchView | None = None) -> bool:
    """Write the state to Redis. Returns False (and logs) when Redis cannot be written."""
    view = view or kill_switch_read_db()
    try:
        pipe = get_redis().pipeline(transaction=True)
        pipe.set(KILL_SWITCH_ACTIVE_KEY, "true" if view.active else "false")
        pipe.set(KILL_SWITCH_MODE_KEY, view.mode)
        pipe.set(KILL_SWITCH_REASON_KEY, view.reason)
        pipe.execute()
    except redis.RedisError as exc:
        logger.error("kill switch: could not mirror state to Redis: %s", exc)
        return False
    return True


def kill_switch_state() -> KillSwitchView:
    """Fast read for ticks and dashboards: Redis first, PostgreSQL when Redis cannot say.

    Fail closed: a missing mirror (Redis flushed) is "unknown", never "inactive"; the database
    is read and the mirror restored. If neither answers, SafetyStateUnknown.
    """
    try:
        values = get_redis().mget(KILL_SWITCH_ACTIVE_KEY, KILL_SWITCH_MODE_KEY, KILL_SWITCH_REASON_KEY)
        if values[0] in ("true", "false"):
            return KillSwitchView(
                active=values[0] == "true", mode=values[1] or "", reason=values[2] or "", source_of_truth="redis"
            )
        redis_ok = True
    except redis.RedisError:
        redis_ok = False
    try:
        view = kill_switch_read_db()
    except DatabaseError as exc:
        raise SafetyStateUnknown("kill switch state unknown: Redis and PostgreSQL both unreachable") from exc
    if redis_ok:
        logger.warning("kill switch mirror missing in Redis; restored from the database")
        kill_switch_mirror(view)
    return view


def _validate(mode: str, reason: str) -> tuple[str, str]:
    if mode not in KillSwitchMode.values:
        raise ValidationError(f"mode must be one of {', '.join(KillSwitchMode.values)}", field="mode")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("a reason is required", field="reason")
    if len(reason) > MAX_REASON_LENGTH:
        raise ValidationError(f"reason is longer than {MAX_REASON_LENGTH} characters", field="reason")
    return mode, reason


def kill_switch_engage(*, mode: str, reason: str, actor: str, source: str,
                       now: datetime | None = None) -> KillSwitchView:
    """Activate. Returns after PostgreSQL holds the state and every in-flight send has finished;
    Redis is written before returning (a failed mirror is logged: readers fall back to the DB).
    """
    mode, reason = _validate(mode, reason)
    now = now or timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [TRADING_GATE_LOCK_KEY])
        state = _state_row_for_update()
        already = state.active and state.mode == mode
        if already:
            logger.warning("kill switch already active in %s; recording the repeated activation", mode)
        state.active, state.mode, state.reason, state.actor, state.changed_at = True, mode, reason, actor, now
        state.save()
        KillSwitchEvent.objects.create(
            action=KillSwitchAction.ACTIVATE, mode=mode, reason=reason, actor=actor, source=source,
            details={"already_active": already},
        )
        audit_record(actor=actor, action="kill_switch.activate", target=mode, details={"reason": reason}, source=source)
        transaction.on_commit(_enqueue_kill_switch_actions)
        transaction.on_commit(lambda: notify_event("kill_switch.activate", {
            "mode": mode, "reason": reason, "actor": actor, "source": source}))
    view = kill_switch_read_db()
    kill_switch_mirror(view)
    logger.critical("KILL SWITCH ACTIVATED (%s) by %s from %s: %s", mode, actor, source, reason)
    return view


def kill_switch_disengage(*, actor: str, source: str, reason: str = "", now: datetime | None = None) -> KillSwitchView:
    """Deactivate. Never resets circuit breakers (DESIGN.md)."""
    now = now or timezone.now()
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON_LENGTH:
        raise ValidationError(f"reason is longer than {MAX_REASON_LENGTH} characters", field="reason")
    with transaction.atomic():
        state = _state_row_for_update()
        if not state.active:
            logger.warning("kill switch deactivation requested but it is not active")
        previous_mode = state.mode
        state.active, state.mode, state.reason, state.actor, state.changed_at = False, "", reason, actor, now
        state.save()
        KillSwitchEvent.objects.create(
            action=KillSwitchAction.DEACTIVATE, mode=previous_mode, reason=reason, actor=actor, source=source,
            details={"was_active": bool(previous_mode)},
        )
        audit_record(actor=actor, action="kill_switch.deactivate", target=previous_mode, details={"reason": reason},
                     source=source)
        transaction.on_commit(lambda: notify_event("kill_switch.deactivate", {
            "previous_mode": previous_mode, "reason": reason, "actor": actor, "source": source}))
    view = kill_switch_read_db()
    kill_switch_mirror(view)
    logger.warning("kill switch deactivated by %s from %s", actor, source)
    return view


def _enqueue_kill_switch_actions() -> None:
    # Imported late: tasks import services, not the other way round at module load.
    from safety.tasks import kill_switch_enforce

    kill_switch_enforce.delay()
