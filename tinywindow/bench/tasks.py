"""Bare Celery tasks: the baselines TinyWindow's own tasks are measured against.

Only bench workers run these. Production workers never import this module (it is not a
`tasks` module of an installed app, so autodiscovery skips it; bench workers load it with
`--include`), and the tasks go to `bench*` queues that no production worker consumes.

Each task does the least that lets the bench see it ran: one Redis command recording the time
(wall clock, as TinyWindow's own timestamps are) in the bench's Redis database. The delivery
options copy the TinyWindow task each one stands for, so a ratio compares TinyWindow's work
with Celery's floor on the same broker and workers.
"""

from __future__ import annotations

import time

from celery import shared_task

from tinywindow.redis_client import get_redis

MODULE = __name__
# Consumed by bench engine workers (next to `execution`) and bench strategy workers (next to `strategy`).
BENCH_QUEUE = "bench"
BENCH_STRATEGY_QUEUE = "bench.strategy"


@shared_task(name="tinywindow.bench.tasks.noop", queue=BENCH_QUEUE, ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def noop(key: str) -> None:
    """Stands for `execute_order` (same delivery options): appends its finish time to the list `key`."""
    get_redis().rpush(key, repr(time.time()))


@shared_task(name="tinywindow.bench.tasks.hop_first", queue=BENCH_STRATEGY_QUEUE, ignore_result=True)
def hop_first(key: str) -> None:
    """Stands for `tick_agent` (strategy worker): enqueues the second hop, on the engine's side."""
    hop_second.delay(key)


@shared_task(name="tinywindow.bench.tasks.hop_second", queue=BENCH_QUEUE, ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def hop_second(key: str) -> None:
    """Stands for `execute_order` (engine worker): records when it ran."""
    get_redis().set(key, repr(time.time()), ex=3600)
