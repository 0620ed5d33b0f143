"""Trading tasks: thin. Each takes ids, calls one service, and is safe to run twice."""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime

import redis
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django import db
from django.conf import settings

from tinywindow import metrics
from tinywindow.exceptions import TemporaryExchangeError, TinyWindowError
from tinywindow.redis_client import get_redis
from trading.models import Agent, Order
from trading.order_states import OrderStatus
from trading.selectors import order_status
from trading.services.agents import TickBook, agent_tick
from trading.services.orders import group_commit_since, order_execute, orders_execute_batch
from trading.services.performance import agent_performance_update
from trading.services.reconcile import reconcile_run
from trading.services.snapshots import portfolio_snapshot_take, portfolio_snapshots_thin
from trading.services.ticks import TICK_LOCK_KEY, agent_ticks_dispatch, agents_tick_batch

logger = logging.getLogger(__name__)

RECONCILE_LOCK_KEY = "tinywindow:lock:reconcile"


@shared_task(name="trading.tasks.tick_agent", bind=True, ignore_result=True)
def tick_agent(self, agent_id: int) -> str:
    """One decision for one agent. A per-agent Redis lock keeps ticks from overlapping, and the
    task id names its orders (agent_tick), so a tick delivered twice orders once.

    Returns the outcome (also the `outcome` label of tinywindow_ticks_total): ordered,
    no_order, stale_data (a symbol skipped for stale/gapped/missing market data), skipped_overlap,
    skipped_redis, timeout (past its soft time limit: no order from it), error or gone.

    The lock outlives the tick's hard time limit by a little, so a tick the worker killed at
    its hard limit (lock never released) holds the agent for at most that long.
    """
    agent_name = str(agent_id)
    started = time.perf_counter()
    try:
        lock = get_redis().lock(TICK_LOCK_KEY.format(agent_id=agent_id), timeout=settings.TICK_TIME_LIMITS[1] + 5,
                                blocking=False)
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
    book = TickBook()
    try:
        result = agent_tick(agent_id=agent_id, tick_id=self.request.id, book=book)
        if result.order_ids:
            outcome = "ordered"
        elif result.unhealthy:
            outcome = "stale_data"
        else:
            outcome = "no_order"
    except Agent.DoesNotExist:
        logger.info("tick for agent %s: agent no longer exists", agent_id)
    except TinyWindowError as exc:
        outcome = "error"
        logger.error("tick for agent %s failed: %s", agent_id, exc, extra={"agent_id": agent_id})
    except SoftTimeLimitExceeded:
        # A strategy or feed stuck past TICK_TIME_LIMITS' soft limit. An order it already
        # committed is executed as usual; the next tick decides afresh.
        outcome = "timeout"
        logger.error("tick for agent %s passed its soft time limit (%s s): abandoned", agent_id,
                     settings.TICK_TIME_LIMITS[0], extra={"agent_id": agent_id})
    finally:
        # Labelled by name, read with the tick's own agent query (the id for an agent that is gone).
        agent_name = book.agent_name(agent_id) or agent_name
        if outcome != "gone":
            metrics.TICKS.labels(agent_name, outcome).inc()
        metrics.TICK_DURATION.labels(agent_name).observe(time.perf_counter() - started)
        try:
            lock.release()
        except redis.RedisError:
            pass  # the lock expires on its own
    return outcome


EXECUTE_MAX_RETRIES = 5
EXECUTE_BACKOFF_MAX_SECONDS = 30


def retry_countdown(retries: int, exc: Exception) -> float:
    """Seconds before retry number `retries + 1`: exponential (1, 2, 4 ... 30 s) with "equal
    jitter" (half fixed, half random: retries of many orders spread out, yet the five retries
    together still cover at least 15 s of a venue or database outage), and never sooner than
    the venue's Retry-After (TemporaryExchangeError.retry_after)."""
    backoff = min(EXECUTE_BACKOFF_MAX_SECONDS, 2 ** retries)
    jittered = backoff / 2 + random.uniform(0, backoff / 2)  # noqa: S311 - not crypto
    return max(jittered, getattr(exc, "retry_after", None) or 0)


@shared_task(
    name="trading.tasks.execute_order",
    bind=True,
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=EXECUTE_MAX_RETRIES,
)
def execute_order(self, order_id: int) -> None:
    """Send one order to its venue. Idempotent by client_order_id (see order_execute).

    Past EXECUTION_TIME_LIMITS' soft limit (a venue call that hangs) the order is left as it is
    — `submitted`, since it is marked before the send — because the venue may hold it: a
    reconciliation run after RECONCILE_STALE_SECONDS asks the venue by client order id and
    records the fill, sends it again, or expires it. At the hard limit the worker kills the
    process; the order is in the same state and beat's reconciliation does the same.

    Retried (at most EXECUTE_MAX_RETRIES times, see `retry_countdown`) on temporary venue errors
    and on a database that cannot be reached: the order's row is the write-ahead record, so
    nothing is sent until it can be written. Past the last retry the order stays as it is and
    reconciliation picks it up the same way.
    """
    try:
        # Unlocked look first: under a backlog most deliveries find their order sent by another
        # delivery's batch (group commit, see order_execute) and stop after this one query. A
        # status past `submitted` is final, so it cannot change back meanwhile.
        read = order_status(order_id, pending_since=group_commit_since())
        if read.status not in (OrderStatus.PENDING, OrderStatus.SUBMITTED, None):
            return
        order_execute(order_id=order_id, claim=read.others_pending)
    except Order.DoesNotExist:
        logger.warning("execute_order: order %s does not exist", order_id)
    except (TemporaryExchangeError, db.OperationalError, db.InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries, exc)) from exc
    except SoftTimeLimitExceeded:
        logger.error("execute_order: order %s passed its soft time limit (%s s); left for reconciliation",
                     order_id, settings.EXECUTION_TIME_LIMITS[0], extra={"order_id": order_id})
        reconcile.apply_async(countdown=settings.RECONCILE_STALE_SECONDS + 1, expires=settings.RECONCILE_SECONDS * 2)


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


@shared_task(name="trading.tasks.thin_portfolio_snapshots", ignore_result=True)
def thin_portfolio_snapshots() -> None:
    """Keep 1-minute snapshots for SNAPSHOT_KEEP_ALL_DAYS, hourly after (idempotent)."""
    portfolio_snapshots_thin()


DISPATCH_LOCK_KEY = "tinywindow:lock:dispatch-agent-ticks"


@shared_task(name="trading.tasks.dispatch_agent_ticks", ignore_result=True)
def dispatch_agent_ticks() -> int:
    """Beat, every second: enqueue the batch ticks that came due (trading/services/ticks.py).
    A Redis lock keeps two dispatches (two beats, a slow run) from sending the same batch twice."""
    try:
        lock = get_redis().lock(DISPATCH_LOCK_KEY, timeout=60, blocking=False)
        if not lock.acquire():
            return 0
    except redis.RedisError as exc:
        logger.error("agent tick dispatch skipped: Redis unavailable (%s)", exc)
        return 0
    try:
        return agent_ticks_dispatch()
    finally:
        try:
            lock.release()
        except redis.RedisError:
            pass  # it expires on its own


@shared_task(name="trading.tasks.tick_agents", ignore_result=True)
def tick_agents(agent_ids: list[int], due: str) -> int:
    """One batch tick: each agent once for its due time (idempotent: see agents_tick_batch).
    Returns how many agents it ticked; counts each in tinywindow_ticks_total like tick_agent."""
    result = agents_tick_batch(agent_ids=agent_ids, due=datetime.fromisoformat(due))
    for agent_id, tick in result.ticked.items():
        outcome = "ordered" if tick.order_ids else ("stale_data" if tick.unhealthy else "no_order")
        metrics.TICKS.labels(result.names[agent_id], outcome).inc()
    for agent_id in result.errors:
        metrics.TICKS.labels(result.names.get(agent_id, str(agent_id)), "error").inc()
    return len(result.ticked)
