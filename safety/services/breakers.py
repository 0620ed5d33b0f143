"""Circuit breakers: measure, trip, recover, reset.

Each breaker (a `CircuitBreakerConfig`) measures one value — daily loss, drawdown,
consecutive losing trades, API error rate, reject rate, price shock, market-data age — for
its scope (global, or per exchange, agent or symbol: one `CircuitBreakerState` per target)
and trips when the value reaches its threshold:

    CLOSED ──(value ≥ threshold)──► OPEN ──(recovery period over, value back below)──► HALF_OPEN
    HALF_OPEN ──(value ≥ threshold)──► OPEN        HALF_OPEN ──(probe period clean)──► CLOSED
    any ──(operator reset with a reason)──► CLOSED

A count-based breaker (consecutive losses) starts counting afresh when it half-opens: the
probe trades decide. While OPEN, new orders in scope are refused; while HALF_OPEN only
`probe_max_orders` orders pass. Orders from the kill switch (flattening) always pass: they
only reduce risk. Every change is a `circuit_breaker_events` row and is mirrored to Redis
(`tinywindow:circuit_breaker:<name>` and the aggregate `tinywindow:circuit_breaker:status`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import redis
from django.db import DatabaseError, transaction
from django.db.models import Expression, F, Q, QuerySet, Sum
from django.utils import timezone

from safety.models import (
    BREAKER_NOT_CLOSED,
    BreakerKind,
    BreakerScope,
    BreakerStatus,
    CircuitBreakerConfig,
    CircuitBreakerEvent,
    CircuitBreakerState,
)
from safety.services import stats
from safety.services.audit import audit_record
from safety.services.notify import notify_event
from tinywindow import metrics
from tinywindow.exceptions import SafetyStateUnknown, ValidationError
from tinywindow.fields import ZERO
from tinywindow.redis_client import BREAKER_STATUS_KEY, get_redis
from tinywindow.rows import constant_in_filter, rows_update_unchanged

logger = logging.getLogger(__name__)

BREAKER_KEY = "tinywindow:circuit_breaker:{name}"
# An inline check of these kinds is queued and has not started (see breakers_check_soon).
CHECK_QUEUED_KEY = "tinywindow:breakers:check_queued:{kinds}"
CHECK_QUEUED_TTL_SECONDS = 30
# The agents whose events asked for an inline check of these kinds since the last one started:
# that check measures the agent-scoped breakers of these agents only (see breakers_check_soon).
CHECK_AGENTS_KEY = "tinywindow:breakers:check_agents:{kinds}"
# When the last full check ran (epoch seconds): the engine's watchdog reads it to notice that
# beat's periodic check stopped arriving.
LAST_FULL_CHECK_KEY = "tinywindow:breakers:last_full_check"
COUNT_BASED_KINDS = frozenset({BreakerKind.CONSECUTIVE_LOSSES})
# Rejections caused by the safety system itself do not feed the reject-rate breaker:
# otherwise an active kill switch would trip it.
SAFETY_REJECT_PREFIXES = ("kill switch", "circuit breaker", "safety state unknown")


# --- the state machine (pure) -------------------------------------------------------------------

@dataclass(frozen=True)
class Transition:
    state: str
    action: str | None  # trip | half_open | close | None (no change)


def breaker_next_state(*, state: str, tripped: bool, now: datetime, changed_at: datetime | None,
                       recovery_seconds: int, probe_seconds: int, count_based: bool = False) -> Transition:
    """The breaker's next state after one measurement. Pure: the property tests drive it."""
    elapsed = (now - changed_at).total_seconds() if changed_at else float("inf")
    if state == BreakerStatus.CLOSED:
        return Transition(BreakerStatus.OPEN, "trip") if tripped else Transition(state, None)
    if state == BreakerStatus.OPEN:
        if elapsed >= recovery_seconds and (count_based or not tripped):
            return Transition(BreakerStatus.HALF_OPEN, "half_open")
        return Transition(state, None)
    if state == BreakerStatus.HALF_OPEN:
        if tripped:
            return Transition(BreakerStatus.OPEN, "trip")
        if elapsed >= probe_seconds:
            return Transition(BreakerStatus.CLOSED, "close")
        return Transition(state, None)
    raise ValueError(f"unknown breaker state {state!r}")


# --- measurements ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measurement:
    value: Decimal
    details: dict


def _start_of_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _measure_daily_loss(config, target: str, now: datetime, since: datetime | None) -> Measurement:
    from trading.models import Fill

    fills = Fill.objects.filter(executed_at__gte=_start_of_day(now)).exclude(realized_pnl=0)  # adds nothing
    if target:
        fills = fills.filter(agent_id=int(target))
    pnl = fills.aggregate(total=Sum("realized_pnl"))["total"] or ZERO
    return Measurement(max(ZERO, -pnl), {"realized_pnl_today": str(pnl)})


def _measure_drawdown(config, target: str, now: datetime, since: datetime | None) -> Measurement:
    from trading.services.snapshots import drawdown_fraction, peak_equity, portfolio_valuation

    equity = portfolio_valuation(now=now).equity
    peak = peak_equity(equity)
    return Measurement(drawdown_fraction(equity, peak), {"equity": str(equity), "peak_equity": str(peak)})


def _measure_consecutive_losses(config, target: str, now: datetime, since: datetime | None) -> Measurement:
    from trading.models import Fill

    closing = Fill.objects.exclude(realized_pnl=0).order_by("-executed_at", "-id")
    if target:
        closing = closing.filter(agent_id=int(target))
    if since:
        closing = closing.filter(executed_at__gt=since)
    return _losing_streak(closing.values_list("realized_pnl", flat=True)[:_streak_depth(config)])


def _streak_depth(config) -> int:
    """How many of the latest closing trades a streak needs: one past the threshold is enough to
    know that it is reached."""
    return int(config.threshold) + 1


def _losing_streak(pnls: Iterable[Decimal]) -> Measurement:
    """Losing trades in a row, from the newest closing trade back."""
    streak = 0
    for pnl in pnls:
        if pnl >= 0:
            break
        streak += 1
    return Measurement(Decimal(streak), {"losing_trades_in_a_row": streak})


# The latest closing trades of many agents, each after its own `since`, in one statement: the
# same rows as _measure_consecutive_losses reads for each (same filter, order and depth).
_LATEST_CLOSING_SQL = """
SELECT t.target, ARRAY(
    SELECT f.realized_pnl FROM fills f
    WHERE f.agent_id = t.agent_id AND f.realized_pnl <> 0 AND (t.since IS NULL OR f.executed_at > t.since)
    ORDER BY f.executed_at DESC, f.id DESC LIMIT %s)
FROM unnest(%s::varchar[], %s::bigint[], %s::timestamptz[]) AS t(target, agent_id, since)
"""


def _measure_consecutive_losses_of_agents(config, states: dict[str, CircuitBreakerState]) -> dict[str, Measurement]:
    from django.db import connection

    targets = list(states)
    with connection.cursor() as cursor:
        cursor.execute(_LATEST_CLOSING_SQL, [_streak_depth(config), targets, [int(t) for t in targets],
                                             [states[t].counting_since for t in targets]])
        return {target: _losing_streak(pnls) for target, pnls in cursor.fetchall()}


def _rate(numerator: int, total: int, min_samples: int) -> Decimal:
    return (Decimal(numerator) / Decimal(total)) if total >= max(1, min_samples) else ZERO


def _measure_api_error_rate(config, target: str, now: datetime, since: datetime | None) -> Measurement:
    calls, errors = stats.api_call_counts(exchange=target, window_seconds=config.window_seconds,
                                          now=now.timestamp())
    return Measurement(_rate(errors, calls, config.min_samples), {"calls": calls, "errors": errors,
                                                                  "window_seconds": config.window_seconds})


def _measure_reject_rate(config, target: str, now: datetime, since: datetime | None) -> Measurement:
    from trading.models import Order

    orders = Order.objects.filter(created_at__gte=now - timedelta(seconds=config.window_seconds))
    if target:
        orders = orders.filter(agent_id=int(target))
    safety_rejects = Q()
    for prefix in SAFETY_REJECT_PREFIXES:
        safety_rejects |= Q(reject_reason__startswith=prefix)
    orders = orders.exclude(Q(status="rejected") & safety_rejects)
    total = orders.count()
    rejected = orders.filter(status="rejected").count()
    return Measurement(_rate(rejected, total, config.min_samples), {"orders": total, "rejected": rejected,
                                                                    "window_seconds": config.window_seconds})


def _measure_price_shock(config, target: str, now: datetime, since: datetime | None) -> Measurement:
    from trading.feeds import feed_for
    from trading.models import Agent

    agent = Agent.objects.filter(symbols__contains=[target]).only("feed").first()
    feed = feed_for(agent.feed if agent else "synthetic")
    minutes = max(1, config.window_seconds // 60)
    candles = feed.candles(target, "1m", limit=minutes, end=now)
    if not candles or candles[0].open <= 0:
        return Measurement(ZERO, {"candles": 0})
    move = abs(candles[-1].close / candles[0].open - 1)
    return Measurement(move, {"from": str(candles[0].open), "to": str(candles[-1].close), "minutes": minutes})


def _measure_stale_data(config, target: str, now: datetime, since: datetime | None) -> Measurement:
    last = stats.market_data_last(symbol=target)
    if last is None:
        return Measurement(ZERO, {"last_seen": None})
    age = Decimal(str(round(max(0.0, now.timestamp() - last), 3)))
    return Measurement(age, {"last_seen_epoch": last})


def _measure_all(config, states: dict[str, CircuitBreakerState], now: datetime) -> dict[str, Measurement]:
    """Each target's measurement: one statement for all of an agent-scoped consecutive-losses
    breaker's agents (the default per-agent breaker, thousands of targets), one (or a few) per
    target otherwise."""
    if config.kind == BreakerKind.CONSECUTIVE_LOSSES and config.scope == BreakerScope.AGENT and states:
        return _measure_consecutive_losses_of_agents(config, states)
    measure = MEASURES[config.kind]
    return {target: measure(config, target, now, state.counting_since) for target, state in states.items()}


MEASURES = {
    BreakerKind.DAILY_LOSS: _measure_daily_loss,
    BreakerKind.DRAWDOWN: _measure_drawdown,
    BreakerKind.CONSECUTIVE_LOSSES: _measure_consecutive_losses,
    BreakerKind.API_ERROR_RATE: _measure_api_error_rate,
    BreakerKind.REJECT_RATE: _measure_reject_rate,
    BreakerKind.PRICE_SHOCK: _measure_price_shock,
    BreakerKind.STALE_DATA: _measure_stale_data,
}


def _targets(config: CircuitBreakerConfig, agent_ids: Collection[int] | None = None) -> list[str]:
    """What one breaker config watches: "" (global), agent ids, exchanges or symbols.
    `agent_ids`: only these agents' targets of an agent-scoped config (an inline check)."""
    from trading.models import Agent, AgentStatus

    if config.scope == BreakerScope.GLOBAL:
        return [""]
    agents = Agent.objects.filter(status=AgentStatus.ACTIVE)
    if config.scope == BreakerScope.AGENT:
        if agent_ids is not None:
            agents = agents.filter(pk__in=list(agent_ids))
        return [str(pk) for pk in agents.values_list("pk", flat=True).order_by("pk")]
    if config.scope == BreakerScope.EXCHANGE:
        seen = stats.api_exchanges_seen(window_seconds=config.window_seconds)
        return sorted(seen | set(agents.values_list("exchange", flat=True)))
    symbols = {s for row in agents.values_list("symbols", flat=True) for s in row}
    if config.kind == BreakerKind.STALE_DATA:
        symbols |= set(stats.market_data_symbols())
    return sorted(symbols)


# --- evaluation -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BreakerChange:
    name: str
    action: str
    state: str
    value: Decimal


def _states_of(config: CircuitBreakerConfig, targets: list[str]) -> dict[str, CircuitBreakerState]:
    """The state rows of these targets, unlocked, in the targets' order; missing ones are created
    first (CLOSED; one insert for all, safe against a concurrent check creating the same)."""
    found = {s.target: s for s in CircuitBreakerState.objects.filter(config=config, target__in=targets)}
    missing = [target for target in targets if target not in found]
    if missing:
        CircuitBreakerState.objects.bulk_create([CircuitBreakerState(config=config, target=target)
                                                 for target in missing], ignore_conflicts=True)
        found.update((s.target, s) for s in CircuitBreakerState.objects.filter(config=config, target__in=missing))
    for state in found.values():
        state.config = config  # what `name` and _record read; saves a join or a query per row
    return {target: found[target] for target in targets}


def _transition(config: CircuitBreakerConfig, state: CircuitBreakerState, value: Decimal,
                now: datetime) -> Transition:
    return breaker_next_state(state=state.state, tripped=value >= config.threshold, now=now,
                              changed_at=state.changed_at, recovery_seconds=config.recovery_seconds,
                              probe_seconds=config.probe_seconds, count_based=config.kind in COUNT_BASED_KINDS)


def _apply_locked(config: CircuitBreakerConfig, target: str, measurement: Measurement,
                  now: datetime) -> BreakerChange | None:
    """Apply one measurement under the state row's lock: the transition is decided again from the
    locked row, so a reset or another check that changed it meanwhile is never overwritten."""
    with transaction.atomic():
        state = CircuitBreakerState.objects.select_for_update().select_related("config").get(config=config,
                                                                                            target=target)
        transition = _transition(config, state, measurement.value, now)
        state.last_value, state.last_checked_at = measurement.value, now
        change = None
        if transition.action:
            state.state, state.changed_at = transition.state, now
            if transition.action == "half_open":
                state.probe_orders_used = 0
                if config.kind in COUNT_BASED_KINDS:
                    state.counting_since = now
            reason = _describe(config, target, measurement.value, transition.action)
            _record(state, action=transition.action, reason=reason, measurement=measurement)
            change = BreakerChange(state.name, transition.action, state.state, measurement.value)
            log = logger.critical if transition.action == "trip" else logger.warning
            log("circuit breaker %s: %s → %s (%s)", state.name, transition.action, state.state, reason)
        state.save()
    return change


def _apply(config: CircuitBreakerConfig, states: dict[str, CircuitBreakerState],
           measurements: dict[str, Measurement], now: datetime) -> list[BreakerChange]:
    """Apply the measurements to the states read (unlocked) before measuring.

    A state that stays as it is (the common case: a CLOSED breaker below its threshold) only
    gets its last value and check time, all such rows in one UPDATE that writes a row only if its
    state and `changed_at` are still the ones read (`rows_update_unchanged`). A state that
    changes, or one that changed since it was read, goes through `_apply_locked`. Per state that
    is one statement shared by all instead of a lock, a write and a commit each: at 1,000 agents
    the full check took 7–8 s, longer than its 5 s period."""
    changes: list[BreakerChange] = []
    quiet = []
    for target, state in states.items():
        measurement = measurements[target]
        if _transition(config, state, measurement.value, now).action:
            if change := _apply_locked(config, target, measurement, now):
                changes.append(change)
        else:
            state.last_value, state.last_checked_at = measurement.value, now
            quiet.append(state)
    written = rows_update_unchanged(quiet, ("last_value", "last_checked_at"), unchanged=("state", "changed_at"))
    for state in quiet:
        if state.pk not in written and (change := _apply_locked(config, state.target, measurements[state.target],
                                                                now)):
            changes.append(change)
    return changes


def _record(state: CircuitBreakerState, *, action: str, reason: str, measurement: Measurement | None,
            actor: str = "system") -> None:
    config = state.config
    CircuitBreakerEvent.objects.create(
        breaker=state.name, scope=f"{config.scope}:{state.target}" if state.target else config.scope,
        action=action, reason=reason, details=measurement.details if measurement else {},
        threshold_value=config.threshold, actual_value=measurement.value if measurement else None, actor=actor,
    )
    if action == "trip":
        metrics.BREAKER_TRIPS.labels(config.name, state.target or "global").inc()
    transaction.on_commit(lambda: notify_event(f"circuit_breaker.{action}", {
        "breaker": state.name, "state": state.state, "reason": reason,
        "threshold_value": str(config.threshold),
        "actual_value": str(measurement.value) if measurement else None,
    }))


def _describe(config: CircuitBreakerConfig, target: str, value: Decimal, action: str) -> str:
    scope = f" for {config.scope} {target}" if target else ""
    label = BreakerKind(config.kind).label
    if action == "trip":
        return f"{label}{scope} reached {value} (threshold {config.threshold})"
    if action == "half_open":
        return f"recovery period of {config.recovery_seconds}s over{scope}: probing with limited trading"
    return f"probe period clean{scope}: {label} at {value}, below {config.threshold}"


def breakers_check(*, now: datetime | None = None, kinds: Iterable[str] | None = None,
                   agent_ids: Collection[int] | None = None) -> list[BreakerChange]:
    """Measure every enabled breaker (or those of `kinds`) and apply the state machine.

    `agent_ids`: an inline check after these agents' fills measures the agent-scoped breakers
    of these agents only (the other scopes in full). Measuring every agent after every fill
    made the check's cost grow with the number of agents: with 200 agents trading, the inline
    checks kept both engine processes busy and orders waited behind them on `execution`. The
    periodic full check (beat) still measures every agent.
    """
    now = now or timezone.now()
    configs = CircuitBreakerConfig.objects.filter(enabled=True)
    if kinds is not None:
        configs = configs.filter(kind__in=list(kinds))
    changes: list[BreakerChange] = []
    for config in configs:
        states = _states_of(config, _targets(config, agent_ids))
        changes += _apply(config, states, _measure_all(config, states, now), now)
    if changes:
        transaction.on_commit(breakers_mirror)  # runs at once when not inside a transaction
    if kinds is None:
        try:
            get_redis().set(LAST_FULL_CHECK_KEY, str(now.timestamp()), ex=86400)
        except redis.RedisError:
            pass  # the watchdog then checks from the engine too: harmless
    return changes


def breakers_check_if_overdue(*, interval_seconds: int, now: datetime | None = None) -> bool:
    """The engine's stand-in for beat: run the full check here when the last one is more than
    three intervals old (beat stopped or its tasks are stuck in a queue). Without it, a stopped
    beat would also stop the breakers watching it: no ticks means market data ages, and only a
    check notices that (the stale-data breaker trips). True when it ran the check."""
    now = now or timezone.now()
    try:
        last = get_redis().get(LAST_FULL_CHECK_KEY)
    except redis.RedisError:
        last = None
    age = now.timestamp() - float(last) if last else None
    if age is not None and age <= 3 * interval_seconds:
        return False
    logger.warning("circuit breakers: last periodic check %s: checking from the engine (is beat running?)",
                   f"{age:.0f} s ago" if age is not None else "unknown")
    breakers_check(now=now)
    return True


def breakers_check_soon(kinds: Iterable[str], *, agent_id: int | None = None, agent_ids: Iterable[int] = ()) -> None:
    """Evaluate these breakers now on the safety queue (after a fill, an API error, a reject).

    Throttled to once a second per set of kinds: a burst of rejects is one check, not a
    thousand. And at most one such check waits in the queue: a check that has not started yet
    measures after this event anyway, so a second one would only queue up in front of the kill
    switch's own tasks on `safety` (100 fills of a busy minute were 25 queued checks before an
    activation's enforcement). `breakers_check_started` clears the mark when the check starts;
    a lost message's mark expires, and the periodic check runs meanwhile.
    `agent_id`: the event was this agent's (a fill): it joins the set of agents the next check
    measures (agent-scoped breakers), whether or not this call queues that check; `agent_ids`:
    several agents' (a batch of fills). Without either the check measures every agent (a
    reject, an API error).
    Never raises: the event that triggered it already happened.
    """
    kinds = sorted(kinds)
    key = ",".join(kinds)
    try:
        redis_client = get_redis()
        agents = [*([agent_id] if agent_id is not None else []), *agent_ids]
        if agents:  # before the throttle: a throttled event's agent is measured by the queued check
            agents_key = CHECK_AGENTS_KEY.format(kinds=key)
            redis_client.pipeline(transaction=False).sadd(agents_key, *agents).expire(
                agents_key, CHECK_QUEUED_TTL_SECONDS * 4).execute()
        if not redis_client.set(f"tinywindow:breakers:check_soon:{key}", "1", nx=True, px=1000):
            return
        if not redis_client.set(CHECK_QUEUED_KEY.format(kinds=key), "1", nx=True, ex=CHECK_QUEUED_TTL_SECONDS):
            return  # one is already waiting
        from safety.tasks import check_breakers

        check_breakers.delay(kinds=kinds, scoped=bool(agents))
    except Exception as exc:  # Redis or broker down: the periodic check still runs
        logger.warning("inline breaker check not queued: %s", exc)


def breakers_check_started(kinds: Iterable[str]) -> set[int] | None:
    """An inline check of these kinds has started: the next event may queue another.

    Returns the agents whose events asked for it (taken, so the next check gets only later
    ones), or None when they cannot be read: the caller then measures every agent."""
    key = ",".join(sorted(kinds))
    try:
        redis_client = get_redis()
        redis_client.delete(CHECK_QUEUED_KEY.format(kinds=key))
        # After the mark is cleared: an event from now on queues a new check and its agent is
        # in that check's set, or in this one's — never in neither.
        members, _ = (redis_client.pipeline(transaction=True).smembers(CHECK_AGENTS_KEY.format(kinds=key))
                      .delete(CHECK_AGENTS_KEY.format(kinds=key)).execute())
        return {int(m) for m in members}
    except redis.RedisError as exc:
        logger.debug("inline breaker check mark not cleared (it expires): %s", exc)
        return None


def breaker_reset(*, reason: str, actor: str, source: str = "", name: str | None = None,
                  now: datetime | None = None) -> list[str]:
    """Close breakers by hand: all, or those whose name (or breaker config name) is `name`."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("a reason is required to reset a circuit breaker", field="reason")
    now = now or timezone.now()
    with transaction.atomic():
        states = CircuitBreakerState.objects.select_for_update().select_related("config").order_by("pk")
        if name:
            config_name, _, target = name.partition(":")
            states = states.filter(config__name=config_name, **({"target": target} if target else {}))
            # An unknown breaker, or a target (symbol, exchange, agent) it never watched, is a typo:
            # refuse it rather than record a reset of nothing.
            if not states.exists() and (target or not CircuitBreakerConfig.objects.filter(name=config_name).exists()):
                raise ValidationError(f"no circuit breaker named {name!r}", field="name")
        reset = []
        for state in states:
            was = state.state
            state.state, state.changed_at, state.counting_since, state.probe_orders_used = (
                BreakerStatus.CLOSED, now, now, 0)
            state.save()
            if was != BreakerStatus.CLOSED:
                _record(state, action="reset", reason=reason, measurement=None, actor=actor)
                reset.append(state.name)
        if not reset:
            logger.warning("breaker reset by %s changed nothing: no breaker%s was open",
                           actor, f" named {name}" if name else "")
            CircuitBreakerEvent.objects.create(breaker=name or "*", action="reset", reason=reason, actor=actor,
                                               details={"noop": True})
        audit_record(actor=actor, action="circuit_breaker.reset", target=name or "*",
                     details={"reason": reason, "reset": reset}, source=source)
        transaction.on_commit(breakers_mirror)
    return reset


# --- reading state --------------------------------------------------------------------------------

def aggregate_status(states: Iterable[str]) -> str:
    states = set(states)
    if BreakerStatus.OPEN in states:
        return BreakerStatus.OPEN
    if BreakerStatus.HALF_OPEN in states:
        return BreakerStatus.HALF_OPEN
    return BreakerStatus.CLOSED


def breakers_mirror() -> bool:
    """Write every breaker's state and the aggregate to Redis; False when Redis is down."""
    rows = list(CircuitBreakerState.objects.select_related("config"))
    try:
        pipe = get_redis().pipeline(transaction=True)
        for state in rows:
            pipe.set(BREAKER_KEY.format(name=state.name), state.state)
        pipe.set(BREAKER_STATUS_KEY, aggregate_status(s.state for s in rows))
        pipe.execute()
    except redis.RedisError as exc:
        logger.error("circuit breakers: could not mirror state to Redis: %s", exc)
        return False
    return True


def _applies(state: CircuitBreakerState, order) -> bool:
    scope = state.config.scope
    if scope == BreakerScope.GLOBAL:
        return True
    if scope == BreakerScope.EXCHANGE:
        return order.exchange == state.target
    if scope == BreakerScope.AGENT:
        return str(order.agent_id) == state.target
    return order.symbol == state.target


def breakers_not_closed() -> list[CircuitBreakerState]:
    """The OPEN and HALF_OPEN breakers (authoritative read). Fail closed when it cannot be read."""
    try:
        return breaker_states(not_closed=True)
    except DatabaseError as exc:
        raise SafetyStateUnknown("circuit breaker state unknown: database unreachable") from exc


def breaker_refusal(order, *, count_probe: bool = False,
                    not_closed: list[CircuitBreakerState] | None = None) -> str | None:
    """Why a breaker refuses this order, or None. Reads the database (authoritative) unless
    the caller passes the `not_closed` breakers it read under the trading gate.

    With `count_probe`, an order let through a HALF_OPEN breaker uses one probe slot.
    """
    if getattr(order, "origin", "") == "kill_switch":
        return None
    for state in breakers_not_closed() if not_closed is None else not_closed:
        if not _applies(state, order):
            continue
        if state.state == BreakerStatus.OPEN:
            return f"circuit breaker {state.name} OPEN (threshold {state.config.threshold}, last {state.last_value})"
        if count_probe:
            used = CircuitBreakerState.objects.filter(
                pk=state.pk, probe_orders_used__lt=state.config.probe_max_orders
            ).update(probe_orders_used=F("probe_orders_used") + 1)
            if not used:
                return f"circuit breaker {state.name} HALF_OPEN: probe limit of {state.config.probe_max_orders} used"
    return None


def breaker_refusal_fast(order) -> str | None:
    """Pre-trade path: when Redis says everything is CLOSED, skip the database."""
    if getattr(order, "origin", "") == "kill_switch":
        return None
    try:
        if get_redis().get(BREAKER_STATUS_KEY) == BreakerStatus.CLOSED:
            return None
    except redis.RedisError:
        pass  # unknown: ask the database
    return breaker_refusal(order, count_probe=True)


def breaker_states_list(*, state: str | None = None, breaker: str | None = None,
                        not_closed: bool = False) -> QuerySet[CircuitBreakerState]:
    """Breaker states with their config, by breaker name and target; only those in `state`, of the
    breaker named `breaker` (e.g. `consecutive_losses`), or not closed (`not_closed`), when given."""
    states = CircuitBreakerState.objects.select_related("config").order_by("config__name", "target")
    if state:
        states = states.filter(state=state)
    if breaker:
        states = states.filter(config__name=breaker)
    if not_closed:
        states = states.filter(not_closed_condition())
    return states


def breaker_states(*, not_closed: bool = False) -> list[CircuitBreakerState]:
    """Every breaker state; with `not_closed`, only the open and half-open ones (what a banner, a
    health check or the trading gate needs: per-agent breakers make tens of thousands of closed
    rows at scale)."""
    return list(breaker_states_list(not_closed=not_closed))


def not_closed_condition() -> Expression:
    """The states in BREAKER_NOT_CLOSED, as a condition that the partial index of those rows
    serves in every plan, a prepared statement's included (tinywindow.rows.constant_in)."""
    return constant_in_filter("state", BREAKER_NOT_CLOSED)


# --- defaults ---------------------------------------------------------------------------------------

DEFAULT_BREAKERS = (
    # name, kind, scope, threshold, window_seconds
    ("daily_loss", BreakerKind.DAILY_LOSS, BreakerScope.GLOBAL, Decimal("2500"), 86400),
    ("drawdown", BreakerKind.DRAWDOWN, BreakerScope.GLOBAL, Decimal("0.10"), 0),
    ("consecutive_losses", BreakerKind.CONSECUTIVE_LOSSES, BreakerScope.AGENT, Decimal("8"), 0),
    ("api_error_rate", BreakerKind.API_ERROR_RATE, BreakerScope.EXCHANGE, Decimal("0.5"), 60),
    ("reject_rate", BreakerKind.REJECT_RATE, BreakerScope.GLOBAL, Decimal("0.5"), 300),
    ("price_shock", BreakerKind.PRICE_SHOCK, BreakerScope.SYMBOL, Decimal("0.08"), 300),
    ("stale_data", BreakerKind.STALE_DATA, BreakerScope.SYMBOL, Decimal("120"), 0),
)


def breakers_ensure_defaults(*, recovery_seconds: int = 60) -> None:
    """Create the standard breakers if missing (thresholds are then edited in the admin)."""
    for name, kind, scope, threshold, window in DEFAULT_BREAKERS:
        CircuitBreakerConfig.objects.get_or_create(
            name=name,
            defaults={"kind": kind, "scope": scope, "threshold": threshold, "window_seconds": window,
                      "recovery_seconds": recovery_seconds},
        )
