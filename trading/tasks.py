"""Trading tasks: thin. Each takes ids, calls one service, and is safe to run twice."""

from __future__ import annotations

import logging
import time

import redis
from celery import shared_task

from tinywindow import metrics
from tinywindow.exceptions import TemporaryExchangeError, TinyWindowError
from tinywindow.redis_client import get_redis
from trading.models import Agent, Order
from trading.services.agents import agent_tick
from trading.services.orders import order_execute
from trading.services.performance import agent_performance_update
from trading.services.snapshots import portfolio_snapshot_take

logger = logging.getLogger(__name__)


@shared_task(name="trading.tasks.tick_agent", ignore_result=True)
def tick_agent(agent_id: int) -> None:
    """One decision for one agent. A per-agent Redis lock keeps ticks from overlapping."""
    agent_name = str(agent_id)
    started = time.perf_counter()
    try:
        lock = get_redis().lock(f"tinywindow:lock:tick:{agent_id}", timeout=300, blocking=False)
        if not lock.acquire():
            metrics.TICKS.labels(agent_name, "skipped_overlap").inc()
            logger.info("tick for agent %s skipped: the previous tick is still running", agent_id)
            return
    except redis.RedisError as exc:
        # Without the lock we cannot rule out an overlapping tick: skip (fail closed).
        metrics.TICKS.labels(agent_name, "skipped_redis").inc()
        logger.error("tick for agent %s skipped: Redis unavailable (%s)", agent_id, exc)
        return
    try:
        agent_name = Agent.objects.filter(pk=agent_id).values_list("name", flat=True).first() or agent_name
        result = agent_tick(agent_id=agent_id)
        metrics.TICKS.labels(agent_name, "ordered" if result.order_ids else "no_order").inc()
    except Agent.DoesNotExist:
        logger.info("tick for agent %s: agent no longer exists", agent_id)
    except TinyWindowError as exc:
        metrics.TICKS.labels(agent_name, "error").inc()
        logger.error("tick for agent %s failed: %s", agent_id, exc, extra={"agent_id": agent_id})
    finally:
        metrics.TICK_DURATION.labels(agent_name).observe(time.perf_counter() - started)
        try:
            lock.release()
        except redis.RedisError:
            pass  # the lock expires on its own


@shared_task(
    name="trading.tasks.execute_order",
    bind=True,
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(TemporaryExchangeError,),
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
)
def execute_order(self, order_id: int) -> None:
    """Send one order to its venue. Idempotent by client_order_id (see order_execute)."""
    try:
        order_execute(order_id=order_id)
    except Order.DoesNotExist:
        logger.warning("execute_order: order %s does not exist", order_id)


@shared_task(name="trading.tasks.take_portfolio_snapshot", ignore_result=True)
def take_portfolio_snapshot() -> None:
    portfolio_snapshot_take()


@shared_task(name="trading.tasks.update_agent_performance", ignore_result=True)
def update_agent_performance() -> None:
    agent_performance_update()
