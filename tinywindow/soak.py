"""The soak (issue 9 "Load"): many agents ticking on short intervals through real workers.

`soak_run` creates `agents` agents (strategy `tinywindow.bench.strategies.Alternate`: flat →
long → flat, so every tick that runs makes an order), starts real Celery worker processes
(strategy workers on `strategy`, one engine on `safety,execution`) and, playing beat, sends
each agent's `tick_agent` every `interval` seconds exactly as beat does — on the `strategy`
queue, expiring after one interval — spread evenly over the interval. After `seconds` it stops
sending, waits for the queues to drain and every order to finish, and checks the books:

- every tick sent is accounted for: it ran (one of tick_agent's outcomes, counted by the
  workers in tinywindow_ticks_total) or it expired in the queue (tinywindow_tasks_total
  state "expired": the documented expiry policy). Anything else is a dropped tick;
- no duplicate orders: client order ids are unique, every order is traced to the tick that
  made it (its client order id is derived from the tick's task id) and no tick made two;
- every order is final, or listed as open at the end;
- tick throughput, and tick → fill latency (from the moment the tick was sent to the order's
  first fill, stamped by the venue) at p50 / p99.

`python manage.py soak` runs it in a throw-away database (like `bench`); the CI test
(tests/integration/test_soak.py) runs a short form in the test database.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "LTC/USDT"]
STRATEGY = "tinywindow.bench.strategies.Alternate"
NAME_PREFIX = "soak-"


@dataclass
class SoakReport:
    agents: int
    interval: int
    seconds: float
    load: str = ""
    ticks_sent: int = 0
    ticks_ran: Counter = field(default_factory=Counter)  # by outcome
    ticks_expired: int = 0
    orders: Counter = field(default_factory=Counter)  # by status
    open_at_end: list[str] = field(default_factory=list)
    duplicate_client_ids: int = 0
    duplicate_decisions: int = 0
    untraced_orders: int = 0
    venue_duplicates: int = 0
    latencies: list[float] = field(default_factory=list)
    drain_seconds: float = 0.0

    @property
    def ticks_dropped(self) -> int:
        return self.ticks_sent - sum(self.ticks_ran.values()) - self.ticks_expired

    @property
    def ok(self) -> bool:
        return (self.ticks_dropped == 0 and not self.open_at_end and self.duplicate_client_ids == 0
                and self.duplicate_decisions == 0 and self.venue_duplicates == 0 and self.untraced_orders == 0)

    def table(self) -> str:
        from tinywindow.bench.core import percentile

        ran = sum(self.ticks_ran.values())
        p50, p99 = (percentile(self.latencies, p) * 1000 for p in (50, 99))
        rows = [
            ("agents × interval", f"{self.agents} × {self.interval} s for {self.seconds:.0f} s ({self.load})"),
            ("ticks sent", f"{self.ticks_sent}"),
            ("ticks run", f"{ran} ({', '.join(f'{k} {v}' for k, v in sorted(self.ticks_ran.items()))})"),
            ("ticks expired in the queue (policy)", f"{self.ticks_expired}"),
            ("ticks dropped otherwise", f"{self.ticks_dropped}"),
            ("tick throughput", f"{ran / self.seconds:.1f} ticks/s run"),
            ("orders", ", ".join(f"{k} {v}" for k, v in sorted(self.orders.items())) or "0"),
            ("orders open at the end", f"{len(self.open_at_end)}"),
            ("duplicate client_order_id / ticks with 2+ orders / venue orders / orders of no tick",
             f"{self.duplicate_client_ids} / {self.duplicate_decisions} / {self.venue_duplicates} / "
             f"{self.untraced_orders}"),
            ("tick → fill latency", f"p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(self.latencies)} fills)"),
            ("drain after the last tick", f"{self.drain_seconds:.1f} s"),
            ("result", "PASS" if self.ok else "FAIL"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
        return "\n".join(lines)


def _setup_agents(n: int, interval: int) -> list[int]:
    from safety.models import CircuitBreakerConfig
    from tinywindow.bench.tick_to_fill import _relax_limits
    from trading.models import Agent
    from trading.services.agents import agent_create

    _relax_limits()
    # Alternate pays fees on every round trip and has no view of the market: keep the price-
    # and loss-driven breakers from stopping the soak; the kill switch and risk checks still run.
    CircuitBreakerConfig.objects.filter(kind="price_shock").update(enabled=False)
    stamp = int(time.time())
    Agent.objects.filter(name__startswith=NAME_PREFIX).update(status="stopped")
    return [
        agent_create(name=f"{NAME_PREFIX}{stamp}-{i}", strategy=STRATEGY, params={"exposure": "0.5"},
                     symbols=[SYMBOLS[i % len(SYMBOLS)]], capital=Decimal("2000"), timeframe="1s",
                     tick_seconds=interval).pk
        for i in range(n)
    ]


def _metric_totals(directory: str) -> tuple[Counter, int]:
    """(tick outcomes, expired ticks) summed over every worker process's metric files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    outcomes: Counter = Counter()
    expired = 0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "tinywindow_ticks_total":
                outcomes[sample.labels["outcome"]] += int(sample.value)
            elif (sample.name == "tinywindow_tasks_total" and sample.labels.get("task") == "trading.tasks.tick_agent"
                  and sample.labels.get("state") == "expired"):
                expired += int(sample.value)
    return outcomes, expired


def soak_run(*, agents: int, seconds: float, interval: int, strategy_workers: int = 1, strategy_concurrency: int = 2,
             engine_concurrency: int = 2, say: Callable[[str], None] = print, log_dir: Path | None = None,
             worker_env: dict[str, str] | None = None, drain_timeout: float = 120) -> SoakReport:
    from django.db.models import Count, Min

    from tinywindow.bench.core import Worker, load_note
    from tinywindow.redis_client import get_redis
    from trading.models import Fill, Order
    from trading.order_states import OPEN_STATUSES
    from trading.services.orders import decision_client_order_id
    from trading.tasks import TICK_LOCK_KEY, tick_agent

    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tinywindow-soak-"))
    metrics_dir = tempfile.mkdtemp(prefix="tinywindow-soak-metrics-")
    env = {**(worker_env or {}), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    agent_ids = _setup_agents(agents, interval)
    report = SoakReport(agents=agents, interval=interval, seconds=seconds)
    workers = [Worker("strategy", name=f"soak-strategy{i}", concurrency=strategy_concurrency, log_dir=log_dir,
                      extra_env=env) for i in range(strategy_workers)]
    workers.append(Worker("safety,execution", name="soak-engine", concurrency=engine_concurrency, log_dir=log_dir,
                          extra_env=env))
    symbol_of = dict(zip(agent_ids, (SYMBOLS[i % len(SYMBOLS)] for i in range(agents)), strict=True))
    tick_of: dict[str, tuple[str, float]] = {}  # the client order id a tick would use → (tick id, sent at)
    try:
        for worker in workers:
            worker.wait_ready()
        report.load = load_note()
        say(f"soak: {agents} agents, a tick each every {interval} s, for {seconds:.0f} s ({report.load}); "
            f"worker logs in {log_dir}")
        started = time.time()
        step = interval / len(agent_ids)
        next_report = started + 10
        n = 0
        while True:
            due = started + n * step
            if due - started >= seconds:
                break
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            pk = agent_ids[n % len(agent_ids)]
            tick_id = str(uuid.uuid4())
            tick_of[decision_client_order_id(agent_id=pk, symbol=symbol_of[pk], tick_id=tick_id)] = (
                tick_id, time.time())
            tick_agent.apply_async(kwargs={"agent_id": pk}, queue="strategy", expires=interval,  # as beat does
                                   task_id=tick_id)
            report.ticks_sent += 1
            n += 1
            if time.time() >= next_report:
                next_report += 10
                done = Order.objects.filter(agent_id__in=agent_ids).exclude(status__in=OPEN_STATUSES).count()
                say(f"  {time.time() - started:4.0f} s: {report.ticks_sent} ticks sent, {done} orders final")
        last_sent = time.time()
        say("  draining: waiting for the queues to empty and every order to finish ...")
        redis = get_redis()
        lock_keys = [TICK_LOCK_KEY.format(agent_id=pk) for pk in agent_ids]
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            queued = redis.llen("strategy") + redis.llen("execution")
            running = sum(redis.exists(*lock_keys[i:i + 500]) for i in range(0, len(lock_keys), 500))
            open_orders = Order.objects.filter(agent_id__in=agent_ids, status__in=OPEN_STATUSES).exists()
            outcomes, expired = _metric_totals(metrics_dir)
            accounted = sum(outcomes.values()) + expired
            if not queued and not running and not open_orders and accounted >= report.ticks_sent:
                break
            time.sleep(0.5)
        report.drain_seconds = time.time() - last_sent
    finally:
        for worker in workers:
            worker.stop()
    report.ticks_ran, report.ticks_expired = _metric_totals(metrics_dir)

    orders = Order.objects.filter(agent_id__in=agent_ids)
    report.orders = Counter(dict(orders.values_list("status").annotate(n=Count("id"))))
    report.open_at_end = list(orders.filter(status__in=OPEN_STATUSES).values_list("client_order_id", flat=True))
    report.duplicate_client_ids = orders.count() - orders.values("client_order_id").distinct().count()
    from paper.models import PaperVenueOrder

    report.venue_duplicates = (PaperVenueOrder.objects.values("client_order_id").annotate(n=Count("id"))
                               .filter(n__gt=1).count())
    # Each order traced to its tick by its client order id; latency from that tick's send.
    first_fill = dict(Fill.objects.filter(agent_id__in=agent_ids).values_list("order_id")
                      .annotate(first=Min("executed_at")))
    per_tick: Counter = Counter()
    for pk, client_order_id in orders.values_list("pk", "client_order_id"):
        traced = tick_of.get(client_order_id)
        if traced is None:
            report.untraced_orders += 1
            continue
        per_tick[traced[0]] += 1
        if pk in first_fill:
            report.latencies.append(first_fill[pk].timestamp() - traced[1])
    report.duplicate_decisions = sum(1 for count in per_tick.values() if count > 1)
    return report
