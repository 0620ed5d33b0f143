"""Keep Redis's copy of the safety state in line with PostgreSQL.

Runs when the engine starts, from its heartbeat every few seconds, and from the periodic
breaker check: if Redis restarted empty or someone ran the runbook's `FLUSHDB`, the
`tinywindow:kill_switch:*` and `tinywindow:circuit_breaker:*` keys come back within seconds.
Meanwhile every reader treats a missing key as unknown and asks the database (fail closed).
"""

from __future__ import annotations

import logging

import redis

from safety.services.breakers import breakers_mirror
from safety.services.kill_switch import kill_switch_mirror, kill_switch_read_db
from tinywindow.redis_client import BREAKER_STATUS_KEY, KILL_SWITCH_ACTIVE_KEY, get_redis

logger = logging.getLogger(__name__)


def safety_mirror_sync(*, force: bool = False) -> bool:
    """Rewrite the mirror when a key is missing (or always with `force`). True when written."""
    try:
        client = get_redis()
        missing = force or client.get(KILL_SWITCH_ACTIVE_KEY) is None or client.get(BREAKER_STATUS_KEY) is None
    except redis.RedisError as exc:
        logger.warning("safety mirror: Redis unreachable (%s)", exc)
        return False
    if not missing:
        return False
    if not force:
        logger.warning("safety mirror missing in Redis: restoring it from the database")
    return kill_switch_mirror(kill_switch_read_db()) and breakers_mirror()
