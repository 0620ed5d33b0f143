"""Kill switch: from the activation's response to the book being safe.

- HALT_ONLY with N resting orders at the paper venue: time from the activation call's return
  to the last open order cancelled (venue and database agree), and how many orders reached
  the venue after the response (must be 0).
- CLOSE_POSITIONS with M open positions: time from the response to every position flat.
Goal (DESIGN.md, issue "Safety system"): under 2 s each on a 2-core machine.
"""

from __future__ import annotations

import time
from decimal import Decimal

from django.utils import timezone

from tinywindow.bench.core import BenchContext, BenchRow, Worker, wait_for
from tinywindow.bench.core import reset_book as _reset_book

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "LTC/USDT")


def _agents(count: int, capital: Decimal):
    from trading.models import Agent
    from trading.services.agents import agent_create

    Agent.objects.filter(name__startswith="bench-ks-").update(status="stopped")
    stamp = int(time.time() * 1000)
    return [agent_create(name=f"bench-ks-{stamp}-{i}", strategy="trading.strategies.sma_cross.SmaCross",
                         params={}, symbols=list(SYMBOLS), capital=capital) for i in range(count)]


def _engage(mode: str) -> float:
    from safety.services.kill_switch import kill_switch_engage

    kill_switch_engage(mode=mode, reason="benchmark", actor="bench", source="bench")
    return time.perf_counter()


def bench_halt(ctx: BenchContext, n_orders: int) -> BenchRow:
    from paper.models import PaperVenueOrder
    from trading.feeds import feed_for
    from trading.models import Order
    from trading.services.orders import order_create, order_execute

    _reset_book()
    agents = _agents(max(1, n_orders // 50), Decimal("10000000"))
    now = timezone.now()
    prices = {s: feed_for("synthetic").last_price(s, now) for s in SYMBOLS}
    ctx.say(f"  placing {n_orders} resting limit orders ...")
    for i in range(n_orders):
        agent, symbol = agents[i % len(agents)], SYMBOLS[i % len(SYMBOLS)]
        # 4% below the market: rests, and stays inside the default 5% price band (fat-finger guard)
        price = (prices[symbol] * Decimal("0.96")).quantize(Decimal("0.01"))
        quantity = (Decimal("20") / price).quantize(Decimal("0.001")) + Decimal("0.001")
        # enqueue=False: executed here, so no execute_order message is left queued for the engine to
        # drain (1,000 stale deliveries) while the measurement runs.
        order = order_create(agent=agent, symbol=symbol, side="buy", quantity=quantity, order_type="limit",
                             price=price, enqueue=False)
        order_execute(order_id=order.pk)
    resting = Order.objects.filter(status="submitted").count()
    if resting != n_orders:
        sample = Order.objects.exclude(status="submitted").values_list("status", "reject_reason").first()
        raise RuntimeError(f"only {resting} of {n_orders} orders rest at the venue; e.g. {sample}")
    engine = Worker("safety,execution", name="bench-engine", concurrency=2, log_dir=ctx.log_dir)
    try:
        engine.wait_ready()
        responded = _engage("HALT_ONLY")
        responded_at = timezone.now()
        done = wait_for(lambda: not Order.objects.filter(status__in=["pending", "submitted",
                                                                      "partially_filled"]).exists()
                        and not PaperVenueOrder.objects.filter(status="open").exists(),
                        timeout=120, interval=0.01, what="every open order cancelled")
        late = PaperVenueOrder.objects.filter(created_at__gt=responded_at).count()
    finally:
        engine.stop()
    seconds = done - responded
    return BenchRow("kill switch", f"HALT_ONLY: response → last of {n_orders} open orders cancelled", seconds,
                    None, "s", "< 2 s, 0 orders after the response", seconds < 2 and late == 0,
                    note=f"{late} orders reached the venue after the response")


def bench_close_positions(ctx: BenchContext, n_positions: int) -> BenchRow:
    from trading.feeds import feed_for
    from trading.models import Position
    from trading.services.orders import order_create, order_execute

    _reset_book()
    agents = _agents(max(1, n_positions // len(SYMBOLS)), Decimal("1000000"))
    now = timezone.now()
    prices = {s: feed_for("synthetic").last_price(s, now) for s in SYMBOLS}
    ctx.say(f"  opening {n_positions} positions ...")
    for i in range(n_positions):
        agent, symbol = agents[i // len(SYMBOLS)], SYMBOLS[i % len(SYMBOLS)]
        quantity = (Decimal("20") / prices[symbol]).quantize(Decimal("0.001")) + Decimal("0.001")
        order_execute(order_id=order_create(agent=agent, symbol=symbol, side="buy", quantity=quantity,
                                            enqueue=False).pk)
    opened = Position.objects.exclude(quantity=0).count()
    engine = Worker("safety,execution", name="bench-engine", concurrency=2, log_dir=ctx.log_dir)
    try:
        engine.wait_ready()
        responded = _engage("CLOSE_POSITIONS")
        done = wait_for(lambda: not Position.objects.exclude(quantity=0).exists(), timeout=120, interval=0.01,
                        what="every position flat")
    finally:
        engine.stop()
    seconds = done - responded
    return BenchRow("kill switch", f"CLOSE_POSITIONS: response → {opened} positions flat", seconds, None, "s",
                    "< 2 s", seconds < 2)


def run(ctx: BenchContext) -> list[BenchRow]:
    n_orders, n_positions = (100, 20) if ctx.quick else (1000, 100)
    return [bench_halt(ctx, n_orders), bench_close_positions(ctx, n_positions)]
