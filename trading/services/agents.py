"""Agents: create them with their beat schedule, and run one tick.

A tick asks the agent's strategy for a target exposure per symbol and turns the difference
from the current position into an order. Every decision's reason is kept (on the agent, and
on the order it produced).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tinywindow.exceptions import ValidationError
from trading.feeds import feed_for
from trading.gateways import gateway_for
from trading.models import Agent, AgentStatus, Order, OrderOrigin, Position
from trading.order_states import OPEN_STATUSES
from trading.services.orders import order_create
from trading.strategies.base import load_strategy

logger = logging.getLogger(__name__)

TICK_TASK = "trading.tasks.tick_agent"


@dataclass(frozen=True)
class TickResult:
    agent_id: int
    decisions: list[str]
    order_ids: list[int]


def agent_schedule_sync(*, agent: Agent) -> PeriodicTask:
    """Create or update the agent's PeriodicTask so beat ticks it every `tick_seconds`.

    `expires` equals the interval: a tick that waited longer than one interval in the queue
    is dropped, so a backlog never turns into a burst of stale orders.
    """
    schedule, _ = IntervalSchedule.objects.get_or_create(every=agent.tick_seconds, period=IntervalSchedule.SECONDS)
    defaults = {
        "task": TICK_TASK,
        "interval": schedule,
        "kwargs": json.dumps({"agent_id": agent.pk}),
        "queue": "strategy",
        "expire_seconds": agent.tick_seconds,
        "enabled": agent.status == AgentStatus.ACTIVE,
        "description": f"Tick agent {agent.name} ({agent.strategy})",
    }
    task, _ = PeriodicTask.objects.update_or_create(name=f"tick-agent-{agent.pk}", defaults=defaults)
    if agent.periodic_task_id != task.pk:
        agent.periodic_task = task
        agent.save(update_fields=["periodic_task", "updated_at"])
    return task


@transaction.atomic
def agent_create(*, name: str, strategy: str, params: dict, symbols: list[str], capital: Decimal,
                 timeframe: str = "5s", tick_seconds: int = 5, exchange: str = "paper", feed: str = "synthetic",
                 mode: str = "paper") -> Agent:
    if Agent.objects.filter(name=name).exists():
        raise ValidationError(f"an agent named {name!r} already exists", field="name")
    if not symbols:
        raise ValidationError("at least one symbol is required", field="symbols")
    if capital <= 0:
        raise ValidationError("capital must be positive", field="capital")
    instance = load_strategy(strategy, params)  # validates the strategy and its parameters
    gateway = gateway_for(exchange)
    for symbol in symbols:
        gateway.market(symbol)
    feed_for(feed)
    agent = Agent.objects.create(
        name=name, strategy=strategy, params=instance.params, symbols=symbols, capital=capital, timeframe=timeframe,
        tick_seconds=tick_seconds, exchange=exchange, feed=feed, mode=mode,
    )
    agent_schedule_sync(agent=agent)
    return agent


def agent_tick(*, agent_id: int, now: datetime | None = None) -> TickResult:
    """Run one decision for every symbol of the agent; create the orders it implies."""
    now = now or timezone.now()
    agent = Agent.objects.get(pk=agent_id)
    if agent.status != AgentStatus.ACTIVE:
        return TickResult(agent_id, [f"agent is {agent.status}"], [])
    strategy = load_strategy(agent.strategy, agent.params)
    feed = feed_for(agent.feed)
    gateway = gateway_for(agent.exchange)
    capital_per_symbol = agent.capital / len(agent.symbols)
    decisions: list[str] = []
    order_ids: list[int] = []
    for symbol in agent.symbols:
        candles = feed.candles(symbol, agent.timeframe, limit=strategy.warmup + 1, end=now)
        position = Position.objects.filter(agent=agent, symbol=symbol).first()
        held = position.quantity if position else Decimal("0")
        decision = strategy.decide(candles, held)
        decisions.append(f"{symbol}: {decision.reason}")
        if decision.target_exposure is None or not candles:
            continue
        if Order.objects.filter(agent=agent, symbol=symbol, status__in=OPEN_STATUSES).exists():
            decisions.append(f"{symbol}: an order is still open; waiting for it")
            continue
        price = candles[-1].close
        market = gateway.market(symbol)
        target_quantity = capital_per_symbol * decision.target_exposure / price
        delta = market.round_amount(abs(target_quantity - held))
        if delta <= 0 or delta * price < market.min_notional:
            continue
        side = "buy" if target_quantity > held else "sell"
        order = order_create(
            agent=agent, symbol=symbol, side=side, quantity=delta, origin=OrderOrigin.STRATEGY,
            decision_reason=decision.reason, reference_price=price, gateway=gateway,
            reduce_only=side == "sell" and target_quantity >= 0,
        )
        order_ids.append(order.pk)
    Agent.objects.filter(pk=agent.pk).update(last_tick_at=now, last_decision="\n".join(decisions)[:4000])
    return TickResult(agent_id, decisions, order_ids)
