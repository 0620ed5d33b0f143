"""Order throughput: orders per second through `execute_order` on the paper venue.

N market orders are created beforehand (`order_create(enqueue=False)`: committed `pending`,
spread round-robin over agents and symbols as many agents' orders would be), then all N
`execute_order` tasks are enqueued at once; the clock runs from the first enqueue to the last
order `executed` (its `closed_at`, stamped by the worker). The engine is a real worker process
with the production settings (`-Q execution`, prefork, concurrency 2).

Baseline: bare Celery tasks per second — a no-op with `execute_order`'s delivery options
(acks_late) that appends its finish time to a Redis list — through the same broker and the
same worker process (it also consumes the `bench` queue), enqueued and timed the same way;
measured before and after TinyWindow's run, the mean is the baseline.
Goal (issue 5): at least 50 % of the bare rate.
"""

from __future__ import annotations

import math
import time
import uuid
from decimal import Decimal

from tinywindow.bench.core import BenchContext, BenchRow, Worker, load_note, reset_book, wait_for

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "LTC/USDT")
ORDERS_PER_AGENT = 40  # under the default limit of 50 open orders per agent, with room for the warm-up
NOTIONAL = Decimal("20")


def _agents(count: int):
    from trading.models import Agent
    from trading.services.agents import agent_create

    Agent.objects.filter(name__startswith="bench-tp-").update(status="stopped")
    stamp = int(time.time() * 1000)
    return [agent_create(name=f"bench-tp-{stamp}-{i}", strategy="trading.strategies.sma_cross.SmaCross",
                         params={}, symbols=list(SYMBOLS), capital=Decimal("10000")) for i in range(count)]


def _create_orders(agents, count: int, prices: dict) -> list[int]:
    from trading.services.orders import order_create

    ids = []
    for i in range(count):
        agent, symbol = agents[i % len(agents)], SYMBOLS[(i // len(agents)) % len(SYMBOLS)]
        quantity = (NOTIONAL / prices[symbol]).quantize(Decimal("0.001")) + Decimal("0.001")
        order = order_create(agent=agent, symbol=symbol, side="buy", quantity=quantity,
                             reference_price=prices[symbol], enqueue=False)
        if order.status != "pending":
            raise RuntimeError(f"order {order.pk} was not accepted: {order.status} {order.reject_reason}")
        ids.append(order.pk)
    return ids


def _bare_rate(n: int, *, timeout: float) -> float:
    """Bare tasks per second: enqueue n no-ops at once, until the last one ran."""
    from tinywindow.bench.tasks import noop
    from tinywindow.redis_client import get_redis

    redis = get_redis()
    key = f"tinywindow:bench:noop:{uuid.uuid4().hex}"
    started = time.time()
    for _ in range(n):
        noop.delay(key)
    wait_for(lambda: redis.llen(key) >= n, timeout=timeout, interval=0.02, what=f"{n} no-op tasks")
    finished = max(float(v) for v in redis.lrange(key, 0, -1))
    redis.delete(key)
    return n / (finished - started)


def _order_rate(ids: list[int], *, timeout: float) -> float:
    """Orders per second: enqueue every execute_order at once, until the last order is executed."""
    from django.db.models import Max

    from trading.models import Order
    from trading.order_states import OPEN_STATUSES
    from trading.tasks import execute_order

    batch = Order.objects.filter(pk__gte=min(ids), pk__lte=max(ids))
    started = time.time()
    for pk in ids:
        execute_order.delay(pk)
    wait_for(lambda: not batch.filter(status__in=OPEN_STATUSES).exists(), timeout=timeout, interval=0.02,
             what=f"{len(ids)} orders executed")
    executed = batch.filter(status="executed").count()
    if executed != len(ids):
        sample = batch.exclude(status="executed").values_list("status", "reject_reason").first()
        raise RuntimeError(f"only {executed} of {len(ids)} orders executed; e.g. {sample}")
    finished = batch.aggregate(last=Max("closed_at"))["last"].timestamp()
    return len(ids) / (finished - started)


def run(ctx: BenchContext) -> list[BenchRow]:
    from django.utils import timezone

    from tinywindow.bench import tasks
    from trading.feeds import feed_for

    n, warm = (200, 20) if ctx.quick else (2000, 100)
    timeout = 60 + n / 5
    reset_book()
    agents = _agents(math.ceil(n / ORDERS_PER_AGENT))
    now = timezone.now()
    prices = {s: feed_for("synthetic").last_price(s, now) for s in SYMBOLS}
    ctx.say(f"  creating {warm} + {n} pending orders over {len(agents)} agents ...")
    warm_ids = _create_orders(agents, warm, prices)
    ids = _create_orders(agents, n, prices)
    engine = Worker(f"execution,{tasks.BENCH_QUEUE}", name="bench-tp-engine", concurrency=2, log_dir=ctx.log_dir,
                    include=tasks.MODULE)
    try:
        engine.wait_ready()
        ctx.say(f"  warm-up: {warm} no-ops, {warm} orders ...")
        _bare_rate(warm, timeout=timeout)
        _order_rate(warm_ids, timeout=timeout)
        load = load_note()
        ctx.say(f"  {n} no-ops, {n} orders, {n} no-ops ({load}) ...")
        bare_before = _bare_rate(n, timeout=timeout)
        orders = _order_rate(ids, timeout=timeout)
        bare_after = _bare_rate(n, timeout=timeout)
    finally:
        engine.stop()
    bare = (bare_before + bare_after) / 2
    return [BenchRow("order throughput", f"execute_order → paper fill, {n} orders, engine -Q execution -c 2 "
                     "vs bare no-op tasks", orders, bare, "/s", "≥ 50 % of bare", orders >= 0.5 * bare,
                     note=f"bare before/after {bare_before:,.0f}/{bare_after:,.0f} /s; {load}")]
