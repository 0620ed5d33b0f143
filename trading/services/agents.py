"""Agents: create, change, pause/resume/stop and delete them with their beat schedule; run one tick.

Every agent owns one django-celery-beat PeriodicTask (`tick-agent-<id>`), kept in step by
these services whatever the trigger (admin, API, CLI): enabled only while the agent is
active, removed with the agent. A tick asks the agent's strategy for a target exposure per
symbol and turns the difference from the current position into an order. Every decision's
reason is kept (on the agent, and on the order it produced).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib.postgres.expressions import ArraySubquery
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Q, QuerySet
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from safety.services.audit import audit_record
from safety.services.stats import market_data_seen
from tinywindow.exceptions import (
    ConfigurationError,
    ExchangeError,
    MarketDataUnavailable,
    ValidationError,
)
from tinywindow.rows import CompiledQuery
from trading.feeds import feed_for
from trading.feeds.base import Feed, timeframe_seconds
from trading.feeds.health import feed_health
from trading.gateways import gateway_for
from trading.gateways.ccxt import ccxt_exchange_known
from trading.models import Agent, AgentStatus, Order, OrderOrigin, Position, TradingMode
from trading.order_states import OPEN_STATUSES
from trading.services.orders import decision_client_order_id, order_create
from trading.sizing import order_for_target
from trading.strategies.base import load_strategy

logger = logging.getLogger(__name__)
AGENT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]*")

TICK_TASK = "trading.tasks.tick_agent"

# What `agent_update` may change. Status has its own audited service (pause/resume/stop);
# bookkeeping fields (last tick, schedule link) are the system's.
UPDATABLE_FIELDS = (
    "name", "strategy", "params", "symbols", "timeframe", "exchange", "feed", "mode", "capital", "tick_seconds",
)
# Changing these while the agent holds something would orphan a position or an open order.
_POSITION_BOUND_FIELDS = ("exchange", "mode")
_STATUS_VERBS = {AgentStatus.ACTIVE: "resume", AgentStatus.PAUSED: "pause", AgentStatus.STOPPED: "stop"}


@dataclass(frozen=True)
class TickResult:
    agent_id: int
    decisions: list[str]
    order_ids: list[int]
    unhealthy: list[str] = field(default_factory=list)  # symbols skipped for stale/gapped/missing data


def ticks_in_batches(tick_seconds: int) -> bool:
    """True when agents with this interval are ticked in batches (trading/services/ticks.py)
    rather than by a beat entry and a task of their own."""
    threshold = settings.AGENT_TICK_BATCH_MIN_SECONDS
    return bool(threshold) and tick_seconds >= threshold


def periodic_task_name(agent_id: int) -> str:
    return f"tick-agent-{agent_id}"


def agent_schedule_sync(*, agent: Agent) -> PeriodicTask:
    """Create or update the agent's PeriodicTask so beat ticks it every `tick_seconds`.

    `expires` equals the interval: a tick that waited longer than one interval in the queue
    is dropped, so a backlog never turns into a burst of stale orders. The task is enabled
    only while the agent is active. Saved through the model (not a queryset update), so
    django-celery-beat's change signal tells a running beat to reload.
    """
    schedule, _ = IntervalSchedule.objects.get_or_create(every=agent.tick_seconds, period=IntervalSchedule.SECONDS)
    defaults = {
        "task": TICK_TASK,
        "interval": schedule,
        "kwargs": json.dumps({"agent_id": agent.pk}),
        "queue": "strategy",
        "expire_seconds": agent.tick_seconds,
        # A batch-ticked agent keeps its entry (the admin links it) but disabled: the
        # dispatch-agent-ticks entry ticks it (trading/services/ticks.py).
        "enabled": agent.status == AgentStatus.ACTIVE and not ticks_in_batches(agent.tick_seconds),
        "description": f"Tick agent {agent.name} ({agent.strategy})"
        + (" - ticked in batches by dispatch-agent-ticks" if ticks_in_batches(agent.tick_seconds) else ""),
    }
    task, _ = PeriodicTask.objects.update_or_create(name=periodic_task_name(agent.pk), defaults=defaults)
    if agent.periodic_task_id != task.pk:
        agent.periodic_task = task
        agent.save(update_fields=["periodic_task", "updated_at"])
    return task


def agent_schedules_resync() -> int:
    """Bring every active agent's beat entry in line with AGENT_TICK_BATCH_MIN_SECONDS (run by
    bootstrap at each start): after that setting changes, an agent moving to batch ticks must
    not keep its own entry enabled (two ticks per bar), and one moving back must get it enabled
    again (no ticks at all). Only the agents whose entry disagrees are touched. Returns how many."""
    threshold = settings.AGENT_TICK_BATCH_MIN_SECONDS
    active = Agent.objects.filter(status=AgentStatus.ACTIVE).select_related("periodic_task")
    batched = Q(tick_seconds__gte=threshold) if threshold else Q(pk__in=[])
    wrong = active.filter((batched & Q(periodic_task__enabled=True)) | (~batched & ~Q(periodic_task__enabled=True)))
    count = 0
    for agent in wrong:
        agent_schedule_sync(agent=agent)
        count += 1
    return count


# --- validation ---------------------------------------------------------------------------------


def _as_capital(value: Any) -> Decimal:
    try:
        capital = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValidationError(f"capital must be a number, got {value!r}", field="capital") from None
    if isinstance(value, bool) or not capital.is_finite() or capital <= 0:
        raise ValidationError(f"capital must be a positive amount, got {value!r}", field="capital")
    return capital


def agent_validate(*, fields: dict[str, Any], instance: Agent | None = None) -> dict[str, Any]:
    """Check a whole agent definition; return it normalised (params as the strategy stores them).

    `fields` are the new values; missing ones come from `instance` (an update) or the model's
    defaults (a create). Raises ValidationError naming the field. Writes nothing, so forms
    (the admin) call it to show errors before any service runs.
    """
    unknown = sorted(set(fields) - set(UPDATABLE_FIELDS))
    if unknown:
        raise ValidationError(f"unknown or read-only agent field(s): {', '.join(unknown)}", field=unknown[0])
    base = instance or Agent()
    values = {name: getattr(base, name) for name in UPDATABLE_FIELDS}
    values.update(fields)

    name = str(values["name"] or "").strip()
    if not name or len(name) > 100:
        raise ValidationError("name must be 1 to 100 characters", field="name")
    # A name is an identifier (the CLI's `agents pause NAME`, metric labels, log lines): no markup,
    # quotes, slashes or control characters to trip up a shell, a page or a log parser.
    if not AGENT_NAME_PATTERN.fullmatch(name):
        raise ValidationError("name may hold letters, digits, spaces and . _ - only, starting with a letter or "
                              "digit", field="name")
    clash = Agent.objects.filter(name=name)
    if instance is not None and instance.pk:
        clash = clash.exclude(pk=instance.pk)
    if clash.exists():
        raise ValidationError(f"an agent named {name!r} already exists", field="name")
    values["name"] = name

    symbols = values["symbols"]
    if isinstance(symbols, str) or not isinstance(symbols, (list, tuple)) or not symbols:
        raise ValidationError("at least one symbol is required", field="symbols")
    symbols = [str(s).strip() for s in symbols]
    if any(not s for s in symbols) or len(set(symbols)) != len(symbols):
        raise ValidationError(f"symbols must be distinct and non-empty, got {symbols!r}", field="symbols")
    values["symbols"] = symbols

    values["capital"] = _as_capital(values["capital"])
    timeframe_seconds(values["timeframe"])
    tick = values["tick_seconds"]
    if isinstance(tick, bool) or not isinstance(tick, int) or not 1 <= tick <= 86400:
        raise ValidationError(f"tick_seconds must be a whole number of seconds, 1..86400, got {tick!r}",
                              field="tick_seconds")

    strategy = load_strategy(values["strategy"], values["params"] or {})  # validates path and params
    values["params"] = strategy.params

    if values["mode"] not in TradingMode.values:
        raise ValidationError(f"mode must be one of {', '.join(TradingMode.values)}", field="mode")
    if values["mode"] == TradingMode.LIVE:
        # DESIGN.md "Security": live trading needs PAPER_TRADING_MODE=false, and a real venue.
        if settings.PAPER_TRADING_MODE:
            raise ValidationError("live mode is refused while PAPER_TRADING_MODE is on", field="mode")
        if values["exchange"] == "paper":
            raise ValidationError("the paper venue cannot trade live; choose an exchange", field="exchange")
    try:
        gateway = gateway_for(values["exchange"])
        for symbol in symbols:
            gateway.market(symbol)
    except ConfigurationError as exc:
        raise ValidationError(str(exc), field="exchange") from exc
    except ExchangeError as exc:
        raise ValidationError(f"{values['exchange']}: {exc}", field="symbols") from exc
    feed_for(values["feed"])
    kind, _, feed_exchange = str(values["feed"] or "").partition(":")
    if kind == "ccxt" and not ccxt_exchange_known(feed_exchange):
        raise ValidationError(f"unknown exchange {feed_exchange!r} in feed {values['feed']!r}", field="feed")
    return values


def _holdings(agent: Agent, symbols: list[str]) -> list[str]:
    """What the agent still holds in `symbols`: non-zero positions and open orders, as phrases."""
    held = [
        f"position {p.quantity.normalize():f} {p.symbol}"
        for p in Position.objects.filter(agent=agent, symbol__in=symbols).exclude(quantity=0)
    ]
    held += [
        f"open order {o.client_order_id} ({o.symbol})"
        for o in Order.objects.filter(agent=agent, symbol__in=symbols, status__in=OPEN_STATUSES)
    ]
    return held


# --- lifecycle ----------------------------------------------------------------------------------


@transaction.atomic
def agent_create(*, name: str, strategy: str, params: dict, symbols: list[str], capital: Decimal,
                 timeframe: str = "5s", tick_seconds: int = 5, exchange: str = "paper", feed: str = "synthetic",
                 mode: str = "paper", actor: str | None = None, source: str = "") -> Agent:
    """Create an active agent and its beat schedule (enabled).

    An operator's creation (admin, API, CLI: `actor` given) is audited; the system's own seeding
    (bootstrap's demo agents, fixtures) passes no actor and is not.
    """
    values = agent_validate(fields={
        "name": name, "strategy": strategy, "params": params, "symbols": symbols, "capital": capital,
        "timeframe": timeframe, "tick_seconds": tick_seconds, "exchange": exchange, "feed": feed, "mode": mode,
    })
    agent = Agent.objects.create(**values)
    agent_schedule_sync(agent=agent)
    if actor is not None:
        audit_record(actor=actor, action="agent.create", target=f"agent:{agent.pk} {agent.name}", source=source,
                     details={name: _json_safe(value) for name, value in values.items()})
    return agent


def _json_safe(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


@transaction.atomic
def agent_update(*, agent: Agent, actor: str = "system", source: str = "", **changes: Any) -> Agent:
    """Change an agent's definition; its schedule follows (interval, description). Audited.

    Refused while it would orphan something: dropping a symbol the agent holds, or moving an
    agent with positions or open orders to another exchange or mode. Status changes go
    through `agent_set_status`. A change to nothing logs a warning and writes nothing.
    """
    if "status" in changes:
        raise ValidationError("use pause/resume/stop (agent_set_status) to change the status", field="status")
    locked = Agent.objects.select_for_update().get(pk=agent.pk)
    values = agent_validate(fields=changes, instance=locked)
    changed = {name: values[name] for name in changes if values[name] != getattr(locked, name)}
    if not changed:
        logger.warning("agent %s: update changes nothing", locked.name, extra={"agent_id": locked.pk})
        return locked
    dropped = sorted(set(locked.symbols) - set(values["symbols"]))
    if "symbols" in changed and dropped and (held := _holdings(locked, dropped)):
        raise ValidationError(f"cannot drop symbol(s) still held: {'; '.join(held)}", field="symbols")
    moved = [name for name in _POSITION_BOUND_FIELDS if name in changed]
    if moved and (held := _holdings(locked, locked.symbols)):
        raise ValidationError(f"cannot change {moved[0]} while the agent holds {'; '.join(held)}", field=moved[0])
    before = {name: _json_safe(getattr(locked, name)) for name in changed}
    for name, value in changed.items():
        setattr(locked, name, value)
    locked.save()
    agent_schedule_sync(agent=locked)
    audit_record(actor=actor, action="agent.update", target=f"agent:{locked.pk} {locked.name}", source=source,
                 details={"before": before, "after": {k: _json_safe(v) for k, v in changed.items()}})
    return locked


@transaction.atomic
def agent_set_status(*, agent: Agent, status: str, actor: str, source: str, reason: str = "") -> Agent:
    """Pause, resume (active) or stop an agent; its PeriodicTask is enabled only while active. Audited.

    Paused and stopped both stop new ticks at once (a tick already queued finds the agent
    inactive and does nothing); positions and open orders are left as they are: flattening is
    the kill switch's job. `stopped` says "out of service" to operators; it can be resumed.
    """
    if status not in AgentStatus.values:
        raise ValidationError(f"status must be one of {', '.join(AgentStatus.values)}, got {status!r}",
                              field="status")
    locked = Agent.objects.select_for_update().get(pk=agent.pk)
    if locked.status == status:
        logger.warning("agent %s is already %s; nothing to do", locked.name, status, extra={"agent_id": locked.pk})
        return locked
    previous = locked.status
    locked.status = status
    locked.save(update_fields=["status", "updated_at"])
    agent_schedule_sync(agent=locked)
    verb = _STATUS_VERBS[AgentStatus(status)]
    audit_record(actor=actor, action=f"agent.{verb}", target=f"agent:{locked.pk} {locked.name}", source=source,
                 details={"from": previous, "to": status, "reason": reason})
    logger.info("agent %s: %s -> %s by %s", locked.name, previous, status, actor, extra={"agent_id": locked.pk})
    return locked


@transaction.atomic
def agent_delete(*, agent: Agent, actor: str = "system", source: str = "") -> None:
    """Delete an agent that never traded, with its PeriodicTask. Audited.

    An agent with orders keeps its history (orders, fills, positions are the system of
    record): stop it instead.
    """
    locked = Agent.objects.select_for_update().get(pk=agent.pk)
    orders = Order.objects.filter(agent=locked).count()
    positions = Position.objects.filter(agent=locked).count()
    if orders or positions:
        raise ValidationError(
            f"agent {locked.name!r} has {orders} order(s) and {positions} position(s); its trading history is "
            "kept, so it cannot be deleted: stop it instead",
            field="agent",
        )
    agent_id, name = locked.pk, locked.name
    locked.delete()
    # By name as well as by link: a schedule whose link was lost must not keep ticking a ghost.
    for task in PeriodicTask.objects.filter(name=periodic_task_name(agent_id)):
        task.delete()  # per object, so beat's change signal fires
    audit_record(actor=actor, action="agent.delete", target=f"agent:{agent_id} {name}", source=source)


# --- the tick -----------------------------------------------------------------------------------


def agent_tick(*, agent_id: int, now: datetime | None = None, tick_id: str | None = None,
               book: TickBook | None = None) -> TickResult:
    """Run one decision for every symbol of the agent; create the orders it implies.

    Market data is judged first (`feed_health`): a symbol whose candles are stale, gapped or
    missing gets no decision and no order, and the recorded reason says why.

    Duplicates and order (docs/reliability.md "Duplicate and out-of-order delivery"): with a
    `tick_id` (the Celery task id), each order's client order id is derived from it, so the
    same tick delivered twice makes at most one order per symbol. A tick whose `now` is older
    than the agent's last tick is stale — a later tick already decided — and decides nothing.

    `book` is where the tick reads the agent, its positions and open orders and records its
    decision: the database, row by row (default), or a batch's preloaded rows
    (trading.services.ticks.BatchTickBook) — the same decisions and orders either way.
    """
    now = now or timezone.now()
    book = book or TickBook()
    agent = book.agent(agent_id)
    if agent.status != AgentStatus.ACTIVE:
        return TickResult(agent_id, [f"agent is {agent.status}"], [])
    if agent.last_tick_at is not None and now < agent.last_tick_at:
        logger.warning("agent %s: stale tick as of %s ignored (last tick %s)", agent.name, now.isoformat(),
                       agent.last_tick_at.isoformat(), extra={"agent_id": agent.pk})
        return TickResult(agent_id, [f"stale tick as of {now.isoformat()}: a later tick already decided"], [])
    strategy = load_strategy(agent.strategy, agent.params)
    feed = book.feed(agent.feed)
    gateway = gateway_for(agent.exchange)
    capital_per_symbol = agent.capital / len(agent.symbols)
    decisions: list[str] = []
    order_ids: list[int] = []
    unhealthy: list[str] = []
    for symbol in agent.symbols:
        try:
            candles = feed.candles(symbol, agent.timeframe, limit=strategy.warmup + 1, end=now)
        except (MarketDataUnavailable, ExchangeError) as exc:
            candles, problem = [], f"unavailable: {exc}"
        else:
            health = feed_health(candles, agent.timeframe, now)
            problem = "" if health.ok else health.describe()
        if candles:  # the stale-data breaker watches how fresh the newest candle is
            book.market_data_seen(symbol=symbol,
                                  candle_close_ts=candles[-1].ts.timestamp() + timeframe_seconds(agent.timeframe))
        if problem:
            # Deciding on old or holed data would trade on a market that is not there: skip, say why.
            unhealthy.append(symbol)
            decisions.append(f"{symbol}: no decision, market data from {feed.name} {problem}")
            logger.warning("agent %s %s: no decision, market data from %s %s", agent.name, symbol, feed.name,
                           problem, extra={"agent_id": agent.pk})
            continue
        held = book.held(agent, symbol)
        decision = strategy.decide(candles, held)
        decisions.append(f"{symbol}: {decision.reason}")
        if decision.target_exposure is None:
            continue
        if book.order_open(agent, symbol):
            decisions.append(f"{symbol}: an order is still open; waiting for it")
            continue
        price = candles[-1].close
        intent = order_for_target(capital=capital_per_symbol, target_exposure=decision.target_exposure,
                                  price=price, held=held, market=gateway.market(symbol))
        if intent is None:
            continue
        client_order_id = (decision_client_order_id(agent_id=agent.pk, symbol=symbol, tick_id=tick_id)
                           if tick_id else None)
        try:
            order = order_create(
                agent=agent, symbol=symbol, side=intent.side, quantity=intent.quantity, origin=OrderOrigin.STRATEGY,
                decision_reason=decision.reason, reference_price=price, gateway=gateway,
                reduce_only=intent.reduce_only, client_order_id=client_order_id, held=held,
            )
        except IntegrityError:
            if not client_order_id:
                raise
            # The same tick delivered twice: its order's client order id is taken (unique), so the
            # insert fails and nothing is written. No look-up first: that would cost every ordering
            # tick a round trip for what the unique index already guarantees.
            decisions.append(f"{symbol}: this tick already placed its order (a repeated delivery)")
            continue
        order_ids.append(order.pk)
    book.record(agent=agent, now=now, decision="\n".join(decisions)[:4000])
    return TickResult(agent_id, decisions, order_ids, unhealthy)


class TickBook:
    """Where a tick reads and records. The agents come with their positions and the symbols of
    their open orders, in one query (`agents_with_book`): a single tick pays one round trip for
    what it reads before deciding, not one per question. Loaded when first asked for (a single
    tick) or up front for a whole batch (trading.services.ticks.BatchTickBook).

    What it holds is read under the agent's tick lock, so no other tick of the agent changes it
    meanwhile; an order of the agent that fills meanwhile was open when read, so the tick waits
    for it rather than decide on a position it has not seen."""

    def __init__(self, agent_ids: list[int] | None = None) -> None:
        self._agents: dict[int, Agent] = {}
        self._held: dict[tuple[int, str], Decimal] = {}
        self._open: set[tuple[int, str]] = set()
        if agent_ids:
            self._load(agent_ids)

    def _load(self, agent_ids: list[int]) -> None:
        for agent in agents_with_book(agent_ids):
            self._agents[agent.pk] = agent
            self._held.update(((agent.pk, symbol), quantity)
                              for symbol, quantity in zip(agent.held_symbols, agent.held_quantities, strict=True))
            self._open.update((agent.pk, symbol) for symbol in agent.open_symbols)

    def agent(self, agent_id: int) -> Agent:
        if agent_id not in self._agents:
            self._load([agent_id])
        try:
            return self._agents[agent_id]
        except KeyError:
            raise Agent.DoesNotExist(f"agent {agent_id} does not exist") from None

    def agent_name(self, agent_id: int) -> str | None:
        """The agent's name if this book has read the agent (metrics label it by name)."""
        agent = self._agents.get(agent_id)
        return agent.name if agent is not None else None

    def feed(self, name: str) -> Feed:
        return feed_for(name)

    def market_data_seen(self, *, symbol: str, candle_close_ts: float) -> None:
        market_data_seen(symbol=symbol, candle_close_ts=candle_close_ts)

    def held(self, agent: Agent, symbol: str) -> Decimal:
        return self._held.get((agent.pk, symbol), Decimal("0"))

    def order_open(self, agent: Agent, symbol: str) -> bool:
        return (agent.pk, symbol) in self._open

    def record(self, *, agent: Agent, now: datetime, decision: str) -> None:
        # Only forward: a tick that raced a later one must not set the clock back.
        Agent.objects.filter(Q(last_tick_at__isnull=True) | Q(last_tick_at__lte=now), pk=agent.pk).update(
            last_tick_at=now, last_decision=decision)


def agents_with_book(agent_ids: list[int]) -> list[Agent]:
    """The agents, each annotated with its positions (`held_symbols`, `held_quantities`, in the
    same order) and the symbols of its open orders (`open_symbols`), in one query."""
    if len(agent_ids) == 1:  # a single tick: the same query, compiled once (tinywindow.rows)
        return _AGENT_WITH_BOOK.instances(agent_id=agent_ids[0])
    return list(_with_book(Agent.objects.filter(pk__in=agent_ids)))


def _with_book(agents: QuerySet[Agent]) -> QuerySet[Agent]:
    positions = Position.objects.filter(agent=OuterRef("pk")).order_by("symbol")
    open_orders = Order.objects.filter(agent=OuterRef("pk"), status__in=OPEN_STATUSES).order_by()
    return agents.annotate(
        held_symbols=ArraySubquery(positions.values("symbol")),
        held_quantities=ArraySubquery(positions.values("quantity")),
        open_symbols=ArraySubquery(open_orders.values("symbol")),
    )


_AGENT_WITH_BOOK = CompiledQuery(lambda agent_id: _with_book(Agent.objects.filter(pk=agent_id)), agent_id=int)
