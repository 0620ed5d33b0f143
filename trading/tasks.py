"""Trading tasks: thin. Each takes ids, calls one service, and is safe to run twice."""

from __future__ import annotations

import logging
import time

import redis
from celery import shared_task
from django.conf import settings

from tinywindow import metrics
from tinywindow.exceptions import TemporaryExchangeError, TinyWindowError
from tinywindow.redis_client import get_redis
from trading.models import Agent, Order
from trading.services.agents import agent_tick
from trading.services.orders import order_execute, orders_execute_batch
from trading.services.performance import agent_performance_update
from trading.services.reconcile import reconcile_run
from trading.services.snapshots import portfolio_snapshot_take

logger = logging.getLogger(__name__)

TICK_LOCK_KEY = "tinywindow:lock:tick:{agent_id}"
RECONCILE_LOCK_KEY = "tinywindow:lock:reconcile"


@shared_task(name="trading.tasks.tick_agent", ignore_result=True)
def tick_agent(agent_id: int) -> str:
    """One decision for one agent. A per-agent Redis lock keeps ticks from overlapping.

    Returns the outcome (also the `outcome` label of tinywindow_ticks_total): ordered,
    no_order, stale_data (a symbol skipped for stale/gapped/missing market data), skipped_overlap,
    skipped_redis, error or gone.
    """
    agent_name = str(agent_id)
    started = time.perf_counter()
    try:
        lock = get_redis().lock(TICK_LOCK_KEY.format(agent_id=agent_id), timeout=300, blocking=False)
        if not lock.acquire():
            metrics.TICKS.labels(agent_name, "skipped_overlap").inc()
            logger.info("tick for agent %s skipped: the previous tick is still running", agent_id)
            return "skipped_overlap"
    except redis.RedisError as exc:
        # Without the lock we cannot rule out an overlapping tick: skip (fail closed).
        metrics.TICKS.labels(agent_name, "skipped_redis").inc()
        logger.error("tick for agent %s skipped: Redis unavailable (%s)", agent_id, exc)
        return "skipped_redis"
    outcome = "gone"
    try:
        agent_name = Agent.objects.filter(pk=agent_id).values_list("name", flat=True).first() or agent_name
        result = agent_tick(agent_id=agent_id)
        if result.order_ids:
            outcome = "ordered"
        elif result.unhealthy:
            outcome = "stale_data"
        else:
            outcome = "no_order"
        metrics.TICKS.labels(agent_name, outcome).inc()
    except Agent.DoesNotExist:
        logger.info("tick for agent %s: agent no longer exists", agent_id)
    except TinyWindowError as exc:
        outcome = "error"
        metrics.TICKS.labels(agent_name, "error").inc()
        logger.error("tick for agent %s failed: %s", agent_id, exc, extra={"agent_id": agent_id})
    finally:
        metrics.TICK_DURATION.labels(agent_name).observe(time.perf_counter() - started)
        try:
            lock.release()
        except redis.RedisError:
            pass  # the lock expires on its own
    return outcome


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


@shared_task(name="trading.tasks.execute_orders", ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def execute_orders(order_ids: list[int]) -> None:
    """Send several orders under one hold of the trading gate (the kill switch's flattening).
    Idempotent like execute_order: orders already past `pending` are looked up, not re-sent."""
    orders_execute_batch(order_ids=order_ids)


@shared_task(name="trading.tasks.reconcile", ignore_result=True, queue="execution")
def reconcile() -> None:
    """Reconcile the books with the venues (beat every RECONCILE_SECONDS, and at engine start).

    A Redis lock keeps two runs from overlapping (the start-up run and beat's, two engines):
    both would re-enqueue the same lost orders and raise the same alerts twice.
    """
    try:
        lock = get_redis().lock(RECONCILE_LOCK_KEY, timeout=settings.CELERY_TASK_TIME_LIMIT, blocking=False)
        if not lock.acquire():
            logger.info("reconcile skipped: another run is in progress")
            return
    except redis.RedisError as exc:
        logger.error("reconcile skipped: Redis unavailable (%s)", exc)
        return
    try:
        reconcile_run()
    finally:
        try:
            lock.release()
        except redis.RedisError:
            pass  # it expires on its own


@shared_task(name="trading.tasks.take_portfolio_snapshot", ignore_result=True)
def take_portfolio_snapshot() -> None:
    portfolio_snapshot_take()


@shared_task(name="trading.tasks.update_agent_performance", ignore_result=True)
def update_agent_performance() -> None:
    agent_performance_update()
