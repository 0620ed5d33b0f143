"""One Redis client per process, with short timeouts: safety reads must fail fast, then fall back."""

from __future__ import annotations

import functools

import redis
from django.conf import settings

# Keys the runbook reads with redis-cli: never rename.
KILL_SWITCH_ACTIVE_KEY = "tinywindow:kill_switch:active"
KILL_SWITCH_MODE_KEY = "tinywindow:kill_switch:mode"
KILL_SWITCH_REASON_KEY = "tinywindow:kill_switch:reason"
BREAKER_STATUS_KEY = "tinywindow:circuit_breaker:status"
ENGINE_HEARTBEAT_KEY = "tinywindow:engine:heartbeat"
# One per Celery worker (its node name), refreshed on every Celery heartbeat; see tinywindow/celery_signals.py.
WORKER_HEARTBEAT_KEY = "tinywindow:worker:heartbeat:{worker}"


@functools.cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        health_check_interval=30,
        decode_responses=True,
    )


def reset_redis_client() -> None:
    """Forget the cached client (tests that restart Redis, forked processes)."""
    get_redis.cache_clear()
