"""Reconciliation: TinyWindow's books against what the venues say.

Runs every RECONCILE_SECONDS (beat: `trading.tasks.reconcile` on the `execution` queue) and when
an engine worker starts (tinywindow/celery.py), so what a crash left behind is repaired at the
restart. Three checks, each safe to run at any time and twice:

1. Orders. Every order at a venue (`submitted`, `partially_filled`) is asked for by its
   client_order_id and brought up to date through `order_apply_report` (fills the engine never
   recorded: a crash between the venue's answer and the commit). An order the venue does not
   know, left `pending` (a crash between the commit and the enqueue) or `submitted` (between
   marking it and sending it) for RECONCILE_STALE_SECONDS, is enqueued again: `execute_order`
   is idempotent by client_order_id and re-checks the kill switch and breakers. But an order
   decided more than RECONCILE_ORDER_MAX_AGE_SECONDS ago is expired instead (sending a stale
   decision is worse than not trading), except the kill switch's flattening orders while
   CLOSE_POSITIONS is still active: the kill switch still wants those positions flat.
2. Positions against balances. Per venue account, the base-asset holdings the positions add up
   to are compared with the venue's balances (free + locked); a difference beyond the market's
   amount step, seen unchanged by two runs in a row (one sighting may be a fill in flight), is
   an alert. Positions are never corrected here: which side is wrong, and why, is for a human
   to find out.
3. Trades we did not place (the runbook's "check for unauthorized trades"). A venue trade of the
   last RECONCILE_TRADES_LOOKBACK_SECONDS whose trade id, order id and client order id match
   nothing in `fills` and `orders` is an alert. Trades younger than RECONCILE_STALE_SECONDS wait
   for a later run: an order in flight has traded before its report is recorded.

An alert is an audit entry (actor `reconciler`; `reconcile_mismatch`, `unauthorized_trade`), a
webhook (`reconcile.mismatch`, `reconcile.unauthorized_trade`) and an ERROR log line. The entry
and the webhook go once per finding (per trade; per distinct difference of one account's
asset), so a standing problem does not flood the audit log every minute; a mismatch that went
away is recorded as `reconcile_resolved`. A standing mismatch is logged at ERROR on every run.

Which venues, by default: checks 1 on every venue with open orders (the paper venue included);
checks 2 and 3 on every venue other than the paper venue that agents trade on (live agents can
only trade there). The paper venue's books live in this database and its matching pass reads
them every second. `reconcile_run(exchanges=[...])` checks the named venues, all three checks.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from safety.models import AuditEvent, KillSwitchMode
from safety.services.audit import audit_record
from safety.services.kill_switch import kill_switch_read_db
from safety.services.notify import notify_event
from tinywindow.exceptions import ConfigurationError, ExchangeError, TemporaryExchangeError
from tinywindow.fields import ZERO
from tinywindow.redis_client import get_redis
from trading.gateways import gateway_for
from trading.gateways.base import (
    Gateway,
    VenueOrderReport,
    VenueTrade,
    gateway_fetch_balances,
    gateway_fetch_my_trades,
    gateway_fetch_orders,
    venue_account,
)
from trading.lock_objects import lock_order
from trading.models import Agent, Fill, Order, OrderOrigin, Position, TradingMode
from trading.order_states import OPEN_STATUSES, OrderStatus
from trading.services.orders import order_apply_report, order_expire, order_transition, reduce_only_refusal

logger = logging.getLogger(__name__)

ACTOR = "reconciler"
SOURCE = "reconcile"
ACTION_MISMATCH = "reconcile_mismatch"
ACTION_RESOLVED = "reconcile_resolved"
ACTION_UNKNOWN_TRADE = "unauthorized_trade"
PAPER = "paper"
MISMATCH_SEEN_KEY = "tinywindow:reconcile:mismatch:{target}"  # the difference the last run saw


def _fmt(value: Decimal) -> str:
    """A Decimal as plain text without padding zeros: the same value always reads the same."""
    return f"{value.normalize():f}" if value else "0"


@dataclass(frozen=True)
class BalanceMismatch:
    exchange: str
    account: str  # a paper agent's account (`agent-<id>`); "" on an exchange, where the API key is the account
    asset: str
    expected: Decimal  # what the positions add up to
    actual: Decimal  # what the venue holds, free + locked
    tolerance: Decimal  # the market's amount step

    @property
    def difference(self) -> Decimal:
        return self.actual - self.expected

    @property
    def target(self) -> str:
        return _balance_target(self.exchange, self.account, self.asset)

    def details(self) -> dict[str, str]:
        return {"exchange": self.exchange, "account": self.account, "asset": self.asset,
                "expected": _fmt(self.expected), "actual": _fmt(self.actual), "difference": _fmt(self.difference),
                "tolerance": _fmt(self.tolerance)}


def _balance_target(exchange: str, account: str, asset: str) -> str:
    return " ".join(part for part in (exchange, account, asset) if part)


@dataclass(frozen=True)
class UnknownTrade:
    exchange: str
    account: str
    trade: VenueTrade

    @property
    def target(self) -> str:
        return f"{self.exchange} trade {self.trade.trade_id}"

    def details(self) -> dict[str, str]:
        t = self.trade
        return {"exchange": self.exchange, "account": self.account, "trade_id": t.trade_id,
                "venue_order_id": t.venue_order_id, "client_order_id": t.client_order_id, "symbol": t.symbol,
                "side": t.side, "quantity": _fmt(t.quantity), "price": _fmt(t.price), "fee": _fmt(t.fee),
                "fee_currency": t.fee_currency, "executed_at": t.executed_at.isoformat()}


@dataclass
class ReconcileReport:
    orders_refreshed: int = 0  # open orders the venue's report changed (fills, status)
    orders_reenqueued: int = 0  # orders the venue never got, sent to execution again
    orders_expired: int = 0  # orders the venue never got, too old to send
    mismatches: list[BalanceMismatch] = field(default_factory=list)  # confirmed: seen by two runs in a row
    unconfirmed_mismatches: int = 0  # seen once: checked again by the next run before alerting
    unknown_trades: list[UnknownTrade] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # checks that could not run, and why

    def summary(self) -> str:
        return (f"{self.orders_refreshed} orders refreshed, {self.orders_reenqueued} re-enqueued, "
                f"{self.orders_expired} expired; {len(self.mismatches)} balance mismatches "
                f"(+{self.unconfirmed_mismatches} unconfirmed); "
                f"{len(self.unknown_trades)} unknown trades; {len(self.errors)} errors")


class _Step(Protocol):
    def __call__(self, *, exchange: str, gateway: Gateway, now: datetime, report: ReconcileReport) -> None: ...


def reconcile_run(*, exchanges: Collection[str] | None = None, now: datetime | None = None) -> ReconcileReport:
    """Reconcile the books with the venues (see the module docstring). Never raises for a venue
    that cannot be reached or configured: that venue's checks are skipped and listed in `errors`."""
    now = now or timezone.now()
    report = ReconcileReport()
    if exchanges is None:
        order_venues = set(Order.objects.filter(status__in=OPEN_STATUSES).order_by()
                           .values_list("exchange", flat=True).distinct())
        account_venues = reconcile_account_venues()
    else:
        order_venues = account_venues = set(exchanges)
    for exchange in sorted(order_venues | account_venues):
        try:
            gateway = gateway_for(exchange)
        except ConfigurationError as exc:
            _error(report, exchange, "gateway", exc)
            continue
        steps: list[tuple[str, _Step]] = []
        if exchange in order_venues:
            steps.append(("orders", _reconcile_orders))
        if exchange in account_venues:
            steps += [("balances", _reconcile_balances), ("trades", _reconcile_trades)]
        for name, step in steps:
            try:
                step(exchange=exchange, gateway=gateway, now=now, report=report)
            except ExchangeError as exc:  # the venue is unreachable or refuses us: the next run tries again
                _error(report, exchange, name, exc)
    level = logging.WARNING if report.errors else logging.INFO
    logger.log(level, "reconcile: %s", report.summary())
    return report


def reconcile_account_venues() -> set[str]:
    """Venues whose balances and trades are checked by default: those of live agents, and every
    venue other than the paper venue that an agent trades on (the local exchange too)."""
    return set(Agent.objects.filter(Q(mode=TradingMode.LIVE) | ~Q(exchange=PAPER)).order_by()
               .values_list("exchange", flat=True).distinct())


def _error(report: ReconcileReport, exchange: str, step: str, problem: object) -> None:
    report.errors.append(f"{exchange} {step}: {problem}")
    logger.error("reconcile: %s %s not checked: %s", exchange, step, problem)


# --- 1. orders -----------------------------------------------------------------------------------
# Orders asked of a venue with a bulk fetch (`fetch_orders`, the paper venue) at once.
FETCH_BATCH = 1000


def _reconcile_orders(*, exchange: str, gateway: Gateway, now: datetime, report: ReconcileReport) -> None:
    lost_before = now - timedelta(seconds=settings.RECONCILE_STALE_SECONDS)
    at_venue = (Order.objects.filter(exchange=exchange, status__in=[OrderStatus.SUBMITTED,
                                                                    OrderStatus.PARTIALLY_FILLED])
                .order_by("pk"))
    stale_pending = Order.objects.filter(exchange=exchange, status=OrderStatus.PENDING,
                                         created_at__lt=lost_before).order_by("pk")
    for order, venue_report in _venue_reports(gateway, [*at_venue, *stale_pending]):
        if isinstance(venue_report, ExchangeError):  # about this order only (a symbol gone from the venue...)
            _error(report, exchange, f"order {order.client_order_id}", venue_report)
            continue
        if venue_report is not None:
            if _venue_agrees(order, venue_report):
                continue
            if _order_refresh(order, venue_report, gateway=gateway, now=now):
                report.orders_refreshed += 1
        elif order.status != OrderStatus.PARTIALLY_FILLED and (order.submitted_at or order.created_at) < lost_before:
            _order_resend_or_expire(order, now=now, report=report)
        elif order.status == OrderStatus.PARTIALLY_FILLED:
            # It traded, so the venue knew it: only a human can tell what happened to the rest.
            _error(report, exchange, f"order {order.client_order_id}", "partially filled here, unknown to the venue")


def _venue_reports(gateway: Gateway, orders: list[Order]) -> Iterator[tuple[Order, VenueOrderReport | None |
                                                                              ExchangeError]]:
    """Each order with what the venue says of it (`gateway_fetch_orders`), asked FETCH_BATCH
    orders at a time: on the paper venue two statements per thousand orders instead of one per
    order (10,000 open orders took ~9.5 s a run)."""
    for start in range(0, len(orders), FETCH_BATCH):
        chunk = orders[start:start + FETCH_BATCH]
        answers = gateway_fetch_orders(gateway, [(order.client_order_id, order.symbol) for order in chunk])
        yield from ((order, answer) for order, (_, answer) in zip(chunk, answers, strict=True))


def _venue_agrees(order: Order, venue_report: VenueOrderReport) -> bool:
    """The venue holds the order open with what our books say is filled: nothing to apply, and no
    lock to take (most orders of a run, every run: resting limit orders)."""
    return (order.status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED)
            and venue_report.status == "open" and venue_report.filled_quantity == order.filled_quantity)


def _order_refresh(order: Order, venue_report: VenueOrderReport, *, gateway: Gateway, now: datetime) -> bool:
    """Apply what the venue says about `order`; True when that changed something."""
    with transaction.atomic():
        # Read under the lock: a worker may have moved the order since it was listed.
        locked = lock_order(order.pk)
        before = (locked.status, locked.filled_quantity)
        if locked.status == OrderStatus.PENDING:
            # The venue holds an order we never marked as sent (orders are marked before the send,
            # so this is a crash of an unusual kind): mark it now, then take the venue's word.
            order_transition(locked, OrderStatus.SUBMITTED, now=now)
            locked.submitted_at = now
            locked.save()
    updated = order_apply_report(order_id=order.pk, report=venue_report, gateway=gateway)
    changed = (updated.status, updated.filled_quantity) != before
    if changed:
        logger.warning("reconcile: order %s was %s with %s filled; the venue says %s: now %s with %s filled",
                       order.client_order_id, before[0], _fmt(before[1]), venue_report.status,
                       updated.status, _fmt(updated.filled_quantity), extra={"order_id": order.pk})
    return changed


def _order_resend_or_expire(order: Order, *, now: datetime, report: ReconcileReport) -> None:
    """An order the venue never received: send it again, or expire it when sending is wrong now."""
    age = now - order.created_at
    reason = ""
    if age > timedelta(seconds=settings.RECONCILE_ORDER_MAX_AGE_SECONDS) and not _flattening_wanted(order):
        reason = (f"never reached the venue; decided {int(age.total_seconds())} s ago, more than "
                  f"RECONCILE_ORDER_MAX_AGE_SECONDS={settings.RECONCILE_ORDER_MAX_AGE_SECONDS}: expired, not sent late")
    elif order.reduce_only:
        # The position may have moved since the order was decided: it must still only reduce it.
        reason = reduce_only_refusal(agent_id=order.agent_id, symbol=order.symbol, side=order.side,
                                     quantity=order.quantity)
    if reason:
        # A no-op when a worker sent it meanwhile: order_expire re-checks under the row lock.
        report.orders_expired += order_expire(order_id=order.pk, reason=reason).status == OrderStatus.EXPIRED
        return
    from trading.tasks import execute_order  # the tasks module imports this one

    execute_order.delay(order.pk)  # idempotent by client_order_id; it re-checks the kill switch
    report.orders_reenqueued += 1
    logger.warning("reconcile: order %s (%s, decided %s s ago) never reached the venue: sent to execution again",
                   order.client_order_id, order.status, int(age.total_seconds()), extra={"order_id": order.pk})


def _flattening_wanted(order: Order) -> bool:
    if order.origin != OrderOrigin.KILL_SWITCH:
        return False
    view = kill_switch_read_db()
    return view.active and view.mode == KillSwitchMode.CLOSE_POSITIONS


# --- 2. positions against balances ---------------------------------------------------------------
class _Markets:
    """Base asset and amount step per symbol, asked of the gateway once per run."""

    def __init__(self, gateway: Gateway, exchange: str, report: ReconcileReport) -> None:
        self.gateway, self.exchange, self.report = gateway, exchange, report
        self.bases: dict[str, str | None] = {}
        self.steps: dict[str, Decimal] = {}  # asset → the largest amount step of its markets

    def base(self, symbol: str) -> str | None:
        if symbol not in self.bases:
            try:
                market = self.gateway.market(symbol)
            except TemporaryExchangeError:
                raise
            except ExchangeError as exc:  # a symbol the venue no longer lists: the rest still counts
                _error(self.report, self.exchange, f"market {symbol}", exc)
                self.bases[symbol] = None
                return None
            self.bases[symbol] = market.base
            self.steps[market.base] = max(self.steps.get(market.base, ZERO), market.amount_step)
        return self.bases[symbol]


def _account_of(gateway: Gateway, agent_id: int) -> str:
    return venue_account(agent_id) if getattr(gateway, "per_agent_accounts", False) else ""


def _reconcile_balances(*, exchange: str, gateway: Gateway, now: datetime, report: ReconcileReport) -> None:
    if not hasattr(gateway, "fetch_balances"):
        return
    markets = _Markets(gateway, exchange, report)
    expected: dict[str, dict[str, Decimal]] = defaultdict(dict)  # account → base asset → quantity
    # Every symbol an agent trades is compared, even without a position: a venue holding what
    # we think is zero is exactly what an unauthorized buy looks like.
    for agent_id, symbols in Agent.objects.filter(exchange=exchange).values_list("pk", "symbols"):
        for symbol in symbols:
            asset = markets.base(symbol)
            if asset:
                expected[_account_of(gateway, agent_id)].setdefault(asset, ZERO)
    for agent_id, symbol, quantity in (Position.objects.filter(agent__exchange=exchange)
                                       .values_list("agent_id", "symbol", "quantity")):
        asset = markets.base(symbol)
        if asset:
            holdings = expected[_account_of(gateway, agent_id)]
            holdings[asset] = holdings.get(asset, ZERO) + quantity
    for account, assets in sorted(expected.items()):
        held = gateway_fetch_balances(gateway, account) or {}
        found = [
            BalanceMismatch(exchange=exchange, account=account, asset=asset, expected=quantity,
                            actual=held.get(asset, ZERO), tolerance=markets.steps[asset])
            for asset, quantity in sorted(assets.items())
            if abs(held.get(asset, ZERO) - quantity) > markets.steps[asset]
        ]
        confirmed = _alert_mismatches(found, checked=[_balance_target(exchange, account, asset) for asset in assets])
        report.mismatches += confirmed
        report.unconfirmed_mismatches += len(found) - len(confirmed)


def _mismatch_confirmed(mismatch: BalanceMismatch) -> bool:
    """True when the previous run saw the same difference (or Redis cannot tell: then alert).

    One observation is not enough: a fill the venue has made and the engine is recording at
    that very moment (an order in flight, a resting order filled between the order check and
    the balance read) looks like a mismatch for a second. A real one stays, unchanged.
    """
    key = MISMATCH_SEEN_KEY.format(target=mismatch.target.replace(" ", ":"))
    difference = _fmt(mismatch.difference)
    try:
        client = get_redis()
        seen = client.get(key)
        client.set(key, difference, ex=3 * settings.RECONCILE_SECONDS)
    except redis.RedisError as exc:
        logger.warning("reconcile: cannot remember mismatches (%s); alerting on the first sighting", exc)
        return True
    return seen == difference


def _mismatches_forget(targets: Iterable[str]) -> None:
    keys = [MISMATCH_SEEN_KEY.format(target=t.replace(" ", ":")) for t in targets]
    if keys:
        try:
            get_redis().delete(*keys)
        except redis.RedisError:
            pass  # they expire on their own


def _alert_mismatches(found: list[BalanceMismatch], *, checked: list[str]) -> list[BalanceMismatch]:
    """Sort out the confirmed mismatches (seen by two runs in a row) and alert on them: an ERROR
    log line every run, an audit entry and a webhook when new or when the difference changed.
    A checked target whose last entry was a mismatch and that matches now gets `reconcile_resolved`.
    Returns the confirmed mismatches."""
    last = {
        event.target: event
        for event in AuditEvent.objects.filter(target__in=checked, action__in=[ACTION_MISMATCH, ACTION_RESOLVED])
        .order_by("target", "-created_at", "-pk").distinct("target")
    }
    confirmed = []
    for mismatch in found:
        details = mismatch.details()
        where = mismatch.exchange + (f" {mismatch.account}" if mismatch.account else "")
        if not _mismatch_confirmed(mismatch):
            logger.warning("reconcile: %s holds %s %s at the venue, the positions add up to %s: checking again "
                           "next run before alerting (a fill may be in flight)", where, details["actual"],
                           mismatch.asset, details["expected"])
            continue
        confirmed.append(mismatch)
        logger.error("reconcile: %s holds %s %s at the venue, the positions add up to %s (difference %s)",
                     where, details["actual"], mismatch.asset, details["expected"], details["difference"])
        previous = last.get(mismatch.target)
        if previous is not None and previous.action == ACTION_MISMATCH \
                and previous.details.get("difference") == details["difference"]:
            continue  # alerted already: the audit log and the webhook hear of it once
        _alert(ACTION_MISMATCH, "reconcile.mismatch", mismatch.target, details)
    mismatched = {m.target for m in found}
    _mismatches_forget(t for t in checked if t not in mismatched)
    for target in checked:
        previous = last.get(target)
        if target not in mismatched and previous is not None and previous.action == ACTION_MISMATCH:
            logger.warning("reconcile: %s matches the positions again", target)
            audit_record(actor=ACTOR, action=ACTION_RESOLVED, target=target, details=previous.details, source=SOURCE)
    return confirmed


def _alert(action: str, event: str, target: str, details: dict[str, Any]) -> None:
    audit_record(actor=ACTOR, action=action, target=target, details=details, source=SOURCE)
    notify_event(event, {"target": target, **details})


# --- 3. trades we did not place ------------------------------------------------------------------
def _reconcile_trades(*, exchange: str, gateway: Gateway, now: datetime, report: ReconcileReport) -> None:
    if not hasattr(gateway, "fetch_my_trades"):
        return
    since = now - timedelta(seconds=settings.RECONCILE_TRADES_LOOKBACK_SECONDS)
    settled_before = now - timedelta(seconds=settings.RECONCILE_STALE_SECONDS)
    symbols: dict[str, set[str]] = defaultdict(set)  # account → symbols to list trades of
    for agent_id, agent_symbols in Agent.objects.filter(exchange=exchange).values_list("pk", "symbols"):
        symbols[_account_of(gateway, agent_id)].update(agent_symbols)
    traded = (Position.objects.filter(agent__exchange=exchange).values_list("agent_id", "symbol").union(
        Order.objects.filter(exchange=exchange, created_at__gte=since).order_by().values_list("agent_id", "symbol")))
    for agent_id, symbol in traded:
        symbols[_account_of(gateway, agent_id)].add(symbol)
    listed: list[tuple[str, VenueTrade]] = []
    for account, names in sorted(symbols.items()):
        for symbol in sorted(names):
            trades = gateway_fetch_my_trades(gateway, symbol, since, account) or []
            listed += [(account, t) for t in trades if t.executed_at < settled_before]
    unknown = [UnknownTrade(exchange, account, trade) for account, trade in _not_ours(exchange, listed)]
    report.unknown_trades += unknown
    _alert_unknown_trades(unknown)


def _not_ours(exchange: str, listed: list[tuple[str, VenueTrade]]) -> Iterable[tuple[str, VenueTrade]]:
    """The trades that match no fill (trade id), no order (client order id) and no order's venue id."""
    trade_ids = {t.trade_id for _, t in listed}
    client_ids = {t.client_order_id for _, t in listed if t.client_order_id}
    venue_ids = {t.venue_order_id for _, t in listed if t.venue_order_id}
    ours = Order.objects.filter(exchange=exchange)
    known_trades = set(Fill.objects.filter(exchange=exchange, trade_id__in=trade_ids)
                       .values_list("trade_id", flat=True))
    known_clients = set(ours.filter(client_order_id__in=client_ids).values_list("client_order_id", flat=True))
    known_venue = set(ours.filter(venue_order_id__in=venue_ids).values_list("venue_order_id", flat=True))
    return [(account, t) for account, t in listed
            if t.trade_id not in known_trades and t.client_order_id not in known_clients
            and t.venue_order_id not in known_venue]


def _alert_unknown_trades(unknown: list[UnknownTrade]) -> None:
    """Audit entry, webhook and ERROR log once per trade (it stays in the lookback window for a
    day; the report still counts it every run)."""
    if not unknown:
        return
    alerted = set(AuditEvent.objects.filter(action=ACTION_UNKNOWN_TRADE, target__in=[u.target for u in unknown])
                  .values_list("target", flat=True))
    for trade in unknown:
        if trade.target in alerted:
            continue
        details = trade.details()
        logger.error("reconcile: trade %s on %s was not placed by TinyWindow: %s %s %s at %s (venue order %s, "
                     "client order id %r)", details["trade_id"], trade.exchange, details["side"], details["quantity"],
                     details["symbol"], details["price"], details["venue_order_id"], details["client_order_id"])
        _alert(ACTION_UNKNOWN_TRADE, "reconcile.unauthorized_trade", trade.target, details)
