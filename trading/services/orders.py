"""Order management: create (write-ahead), execute, apply venue reports, cancel.

The path of one order (DESIGN.md "One trade, end to end"):
1. `order_create` runs the pre-trade checks and commits the row — `pending` with a unique
   `client_order_id`, or `rejected` with the reason — and only then enqueues execution.
2. `order_execute` (task on the `execution` queue) re-checks the kill switch under the
   trading gate, marks the order `submitted`, calls the gateway, and applies the report.
3. `order_apply_report` turns venue fills into `fills` rows (a replayed trade id is a no-op),
   moves the position under a row lock, and sets status, fees and realized `pnl`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from safety.services.breakers import breakers_check_soon
from safety.services.gate import TradingGate, pretrade_refusal, trading_gate, trading_gate_in_transaction
from safety.services.kill_switch import KillSwitchView
from safety.services.risk import risk_check_order
from tinywindow import metrics
from tinywindow.exceptions import PermanentExchangeError, SafetyStateUnknown, TradingHalted, ValidationError
from tinywindow.faults import crash_point
from tinywindow.fields import ZERO
from tinywindow.rows import CompiledQuery, rows_update
from trading.gateways import gateway_for
from trading.gateways.base import Gateway, OrderRequest, VenueOrderReport, gateway_cancel_orders, venue_account
from trading.lock_objects import lock_order, lock_orders_to_send, lock_positions
from trading.models import Agent, Fill, Order, OrderOrigin, OrderSide, OrderType, Position
from trading.order_states import OPEN_STATUSES, OrderStatus, check_transition
from trading.selectors import orders_waiting_for_venue
from trading.services.positions import position_apply_fill

logger = logging.getLogger(__name__)


def new_client_order_id(agent_id: int) -> str:
    """Unique, and readable enough to find in venue logs: tw-<agent>-<random>."""
    return f"tw-{agent_id}-{uuid.uuid4().hex[:24]}"


def decision_client_order_id(*, agent_id: int, symbol: str, tick_id: str) -> str:
    """The client order id of the order one tick decides for one symbol: derived from the tick's
    task id, so the same tick delivered twice (a broker redelivery, a message published again)
    derives the same id and the unique constraint on `client_order_id` admits only one order.
    Same shape as `new_client_order_id` (Binance allows 36 characters)."""
    return f"tw-{agent_id}-{hashlib.sha256(f'{tick_id}|{symbol}'.encode()).hexdigest()[:24]}"


def order_transition(order: Order, new_status: str, *, now: datetime | None = None) -> None:
    """Move `order` to `new_status` (in memory; the caller saves). Illegal moves raise."""
    check_transition(order.status, new_status)
    order.status = new_status
    if new_status not in OPEN_STATUSES and order.closed_at is None:
        order.closed_at = now or timezone.now()
    metrics.ORDERS.labels(new_status, order.agent.name, order.symbol, order.mode).inc()


REDUCE_ONLY_REFUSAL = "reduce-only order would increase the position"
REJECT_KINDS = (
    ("kill switch", "kill_switch"),
    ("circuit breaker", "circuit_breaker"),
    ("risk limit", "risk_limit"),
    (REDUCE_ONLY_REFUSAL, "risk_limit"),  # a pre-trade rule like the limits, counted with them
    ("safety state unknown", "safety_unknown"),
)


def _reject_kind(reason: str) -> str:
    for prefix, kind in REJECT_KINDS:
        if reason.startswith(prefix):
            return kind
    return "venue"


def _after_reject(reason: str) -> None:
    metrics.ORDER_REJECTS.labels(_reject_kind(reason)).inc()
    if _reject_kind(reason) in ("risk_limit", "venue"):
        transaction.on_commit(lambda: breakers_check_soon(["reject_rate"]))


def order_create(*, agent: Agent, symbol: str, side: str, quantity: Decimal, order_type: str = OrderType.MARKET,
                 price: Decimal | None = None, reduce_only: bool = False, origin: str = OrderOrigin.STRATEGY,
                 decision_reason: str = "", reference_price: Decimal | None = None,
                 gateway: Gateway | None = None, enqueue: bool = True, client_order_id: str | None = None,
                 held: Decimal | None = None) -> Order:
    """Validate, check, and commit one order; enqueue its execution after the commit
    (unless `enqueue` is False: the caller executes it, e.g. in a batch).

    `client_order_id` (default: a new random one) is how a tick makes its order idempotent
    (`decision_client_order_id`): a second order with the same id raises IntegrityError.
    `held`: the agent's position in `symbol` when the caller has just read it (a tick)."""
    order = _order_build(agent=agent, symbol=symbol, side=side, quantity=quantity, order_type=order_type, price=price,
                         reduce_only=reduce_only, origin=origin, decision_reason=decision_reason,
                         reference_price=reference_price, gateway=gateway, client_order_id=client_order_id,
                         held=held)
    with transaction.atomic():
        order.save()
        metrics.ORDERS.labels(order.status, agent.name, symbol, order.mode).inc()
        if order.status == OrderStatus.PENDING and enqueue:
            transaction.on_commit(lambda: _enqueue_execution(order.pk))
    logger.info("order %s %s %s %s: %s", order.client_order_id, side, order.quantity, symbol, order.status,
                extra={"order_id": order.pk, "agent_id": agent.pk})
    return order


def orders_flatten_create(*, positions: list[Position], reason: str, kill_switch: KillSwitchView) -> list[Order]:
    """The kill switch's flattening orders: one reduce-only market order (origin `kill_switch`)
    per position, each validated and checked as `order_create` does, all written with one INSERT
    (100 positions: one round trip, not a hundred commits). Not enqueued: the caller sends them
    in batches (`orders_execute_batch`). `positions` carry their agent (select_related);
    `kill_switch` is the state the caller read (the pre-trade check of every order uses it)."""
    orders = []
    for position in positions:
        try:
            orders.append(_order_build(
                agent=position.agent, symbol=position.symbol, side="sell" if position.quantity > 0 else "buy",
                quantity=abs(position.quantity), reduce_only=True, origin=OrderOrigin.KILL_SWITCH,
                decision_reason=reason, held=position.quantity, kill_switch=kill_switch))
        except ValidationError as exc:  # dust below the market's step: nothing can be sent for it
            logger.warning("position %s not flattened: %s", position, exc)
    with transaction.atomic():
        Order.objects.bulk_create(orders)
    for order in orders:
        metrics.ORDERS.labels(order.status, order.agent.name, order.symbol, order.mode).inc()
    logger.info("%s flattening orders created", len(orders))
    return orders


def _order_build(*, agent: Agent, symbol: str, side: str, quantity: Decimal, order_type: str = OrderType.MARKET,
                 price: Decimal | None = None, reduce_only: bool = False, origin: str = OrderOrigin.STRATEGY,
                 decision_reason: str = "", reference_price: Decimal | None = None,
                 gateway: Gateway | None = None, client_order_id: str | None = None,
                 held: Decimal | None = None, kill_switch: KillSwitchView | None = None) -> Order:
    """An unsaved order, validated and checked: `pending`, or `rejected` with its reason.
    `held`: the agent's position in `symbol` when the caller has just read it (reduce-only check);
    `kill_switch`: the kill-switch state when the caller has just read it (see `pretrade_refusal`)."""
    if side not in OrderSide.values:
        raise ValidationError(f"side must be one of {', '.join(OrderSide.values)}", field="side")
    if order_type not in OrderType.values:
        raise ValidationError(f"order_type must be one of {', '.join(OrderType.values)}", field="order_type")
    if not isinstance(quantity, Decimal) or not quantity.is_finite() or quantity <= 0:
        raise ValidationError("quantity must be a positive number", field="quantity")
    if order_type == OrderType.LIMIT and (price is None or not price.is_finite() or price <= 0):
        raise ValidationError("a limit order needs a positive price", field="price")
    gateway = gateway or gateway_for(agent.exchange)
    market = gateway.market(symbol)
    rounded = market.round_amount(quantity)
    if rounded <= 0:
        raise ValidationError(f"quantity rounds to zero at the market's step {market.amount_step}", field="quantity")
    order = Order(
        client_order_id=client_order_id or new_client_order_id(agent.pk), agent=agent, exchange=agent.exchange,
        mode=agent.mode,
        symbol=symbol, side=side, order_type=order_type, quantity=rounded,
        price=market.round_price(price) if price is not None else None, reduce_only=reduce_only, origin=origin,
        decision_reason=decision_reason, reference_price=reference_price,
    )
    # Before the safety checks: pretrade_refusal() spends a HALF_OPEN breaker's probe slot on each
    # order it lets through, and an order refused for its own shape must not use one up.
    refusal = (reduce_only_refusal(agent_id=agent.pk, symbol=symbol, side=side, quantity=rounded, held=held)
               if reduce_only else "")
    if not refusal:
        try:
            refusal = pretrade_refusal(order, kill_switch=kill_switch)
        except SafetyStateUnknown as exc:
            refusal = f"safety state unknown: {exc}"
    if not refusal:
        last_price = reference_price or market_last_price(agent, symbol)
        decision = risk_check_order(order, market=market, last_price=last_price, now=timezone.now())
        refusal = "" if decision.allowed else decision.reason
    if refusal:
        order.status = OrderStatus.REJECTED
        order.reject_reason = refusal
        order.closed_at = timezone.now()
        _after_reject(refusal)
    return order


def reduce_only_refusal(*, agent_id: int, symbol: str, side: str, quantity: Decimal,
                        held: Decimal | None = None) -> str:
    """Why a reduce-only order may not go ("" when it may): it must be opposite to the agent's
    position in `symbol` and no larger than it. Rejected rather than capped: an order's quantity
    is what was decided, and a refusal with its reason is clearer than a silently smaller order.

    Other open orders are not netted against the position: the kill switch cancels them before
    it flattens, ticks wait for an agent's open order, and netting would let an order about to be
    cancelled block a flattening order.
    """
    if held is None:  # unless the caller has just read it
        held = Position.objects.filter(agent_id=agent_id, symbol=symbol).values_list("quantity", flat=True).first()
    held = held if held is not None else ZERO
    reduces = (held > 0 and side == OrderSide.SELL) or (held < 0 and side == OrderSide.BUY)
    if reduces and quantity <= abs(held):
        return ""
    return f"{REDUCE_ONLY_REFUSAL}: {side} {quantity.normalize():f} {symbol} against a position of {held.normalize():f}"


def market_last_price(agent: Agent, symbol: str) -> Decimal:
    from trading.feeds import feed_for

    return feed_for(agent.feed).last_price(symbol, timezone.now())


def _enqueue_execution(order_id: int) -> None:
    from trading.tasks import execute_order

    execute_order.delay(order_id)


def order_reject(*, order_id: int, reason: str) -> Order:
    with transaction.atomic():
        return _order_reject_locked(lock_order(order_id), reason)


def _order_reject_locked(order: Order, reason: str) -> Order:
    """Reject an order the caller holds locked (in its transaction)."""
    if order.status in OPEN_STATUSES:
        order_transition(order, OrderStatus.REJECTED)
        order.reject_reason = reason
        order.save()
        _after_reject(reason)
    logger.warning("order %s rejected: %s", order.client_order_id, reason, extra={"order_id": order.pk})
    return order


def order_expire(*, order_id: int, reason: str) -> Order:
    """Give up on an order no venue holds (reconciliation: never sent, and its decision is now stale)."""
    with transaction.atomic():
        order = lock_order(order_id)
        if order.status in (OrderStatus.PENDING, OrderStatus.SUBMITTED) and order.filled_quantity == 0:
            order_transition(order, OrderStatus.EXPIRED)
            order.reject_reason = reason
            order.save()
            logger.warning("order %s expired: %s", order.client_order_id, reason, extra={"order_id": order_id})
    return order


# pg_try_advisory_lock(key1, key2) namespace of "a delivery of this order is talking to the venue"
# ("tw" + 2; the order id is key2). Two-key locks never collide with the one-key trading gate.
ORDER_IN_FLIGHT_LOCK = 0x7477_0002


@contextmanager
def order_in_flight(order_id: int) -> Iterator[bool]:
    """Yields True when this delivery may work on the order, False when another live delivery
    already is. Session-level, so PostgreSQL drops it when that delivery's process dies (kill -9,
    a hard time limit): a later delivery or reconciliation then takes over."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [ORDER_IN_FLIGHT_LOCK, order_id % 2**31])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [ORDER_IN_FLIGHT_LOCK, order_id % 2**31])


def order_execute(*, order_id: int, gateway: Gateway | None = None, gate: TradingGate | None = None,
                  claim: bool = True) -> Order:
    """Send a pending order to its venue; safe to run twice for the same order, also at once.

    `gate` is a trading gate the caller already holds (batch execution); without it the
    order takes and releases the gate itself.

    Two deliveries at the same time (a redelivered message while the first still runs): the
    second finds the order in flight and leaves it to the first. Without that, it would see the
    order `submitted` but not yet at the venue, and send it a second time — a venue that
    forgets client order ids of filled orders (Binance only refuses duplicates of open ones)
    would then fill it twice.

    On a venue in this database (paper) a delivery also sends other queued `pending` orders in
    its transaction (`_claim_pending_orders`): under a backlog one venue operation and one
    booking serve a batch, and those orders' own deliveries find them done. `claim=False` skips
    that look (the caller has just seen no other order waiting): a round trip fewer for an order
    that travels alone; one that arrives meanwhile is sent by its own delivery.
    """
    if gate is None:
        order = _order_execute_local(order_id=order_id, gateway=gateway, claim=claim)
        if order is not None:
            return order
    with order_in_flight(order_id) as mine:
        if not mine:
            logger.info("order %s: another delivery is sending it; leaving it to that one", order_id,
                        extra={"order_id": order_id})
            return Order.objects.select_related("agent").get(pk=order_id)
        return _order_execute(order_id=order_id, gateway=gateway, gate=gate)


def _order_execute_local(*, order_id: int, gateway: Gateway | None, claim: bool = True) -> Order | None:
    """`order_execute` for a venue that lives in this database (the paper venue, whose gateway
    says `shares_database`): the gate, the last safety check, the send and the bookkeeping in
    one transaction. Returns None, having changed nothing, when the order's venue is remote.

    The same steps as the remote path, in fewer round trips (one order: ~15 queries, not ~45):
    - the trading gate is taken for the transaction (`trading_gate_in_transaction`), so it is
      held until the commit, after the venue has answered: an activation waits for this send,
      and a send that starts after it sees the kill switch active;
    - the order's row lock, held to the end, keeps a second delivery out until this one has
      committed (it then finds the order done), so no in-flight lock is needed;
    - `submitted` is not committed on its own before the send: the venue's books are in this
      transaction, so a crash rolls the venue order and the books back together and leaves the
      order `pending`, sent again by the next delivery or by reconciliation;
    - the order is locked once, the venue's report applied to it (`_orders_book_reports`) and
      written once.
    """
    with transaction.atomic():
        gate = trading_gate_in_transaction()
        order = lock_order(order_id)
        gateway = gateway or gateway_for(order.exchange)
        if not _shares_database(gateway):
            return None
        orders = [order]
        if order.status == OrderStatus.PENDING and claim:
            orders += _claim_pending_orders(exchange=order.exchange, besides=order.pk)
        _orders_send_locked(orders, gateway, gate)
    return order


def _claim_pending_orders(*, exchange: str, besides: int) -> list[Order]:
    """Other `pending` orders for the same in-database venue that no other worker holds, to send
    in this transaction (group commit; at most EXECUTION_BATCH_MAX - 1 of them, oldest first).

    Under a backlog every delivery would otherwise pay the gate, the safety read, the locks and
    the commit for one order; here the first delivery sends the queued ones with one venue
    operation and one booking, and their own deliveries later find them done. `SKIP LOCKED`:
    an order another worker is sending (or claiming) is left to it. Only the orders are locked
    (`of self`): locking their agents too would make a batch skip every order of an agent whose
    other order is being sent. Orders older than RECONCILE_STALE_SECONDS are left to
    reconciliation, which decides whether a stale decision is still sent.
    """
    limit = settings.EXECUTION_BATCH_MAX - 1
    if limit <= 0:
        return []
    return _claim_query(limit).instances(exchange=exchange, since=group_commit_since(), besides=besides)


def group_commit_since() -> datetime:
    """The oldest `pending` order a delivery sends with its own: older ones are reconciliation's."""
    return timezone.now() - timedelta(seconds=settings.RECONCILE_STALE_SECONDS)


@functools.cache
def _claim_query(limit: int) -> CompiledQuery:
    """`_claim_pending_orders`' query for this batch limit, compiled once (tinywindow.rows)."""
    return CompiledQuery(
        lambda exchange, since, besides: orders_waiting_for_venue(exchange=exchange, since=since, besides=besides)
        .select_for_update(skip_locked=True, of=("self",)).select_related("agent").order_by("pk")[:limit],
        exchange=str, since=datetime, besides=int)


def _shares_database(gateway: Gateway) -> bool:
    return bool(getattr(gateway, "shares_database", False))


def _orders_send_locked(orders: list[Order], gateway: Gateway, gate: TradingGate) -> None:
    """Check, send and book orders the caller holds locked, inside the caller's transaction, to
    one venue in this database (see `_order_execute_local`): the new ones in one venue operation
    (`submit_orders`) and one booking (`_orders_book_reports`)."""
    to_send: list[Order] = []
    reports: list[tuple[Order, VenueOrderReport]] = []
    now = timezone.now()
    for order in orders:
        if order.status == OrderStatus.SUBMITTED:
            # Left `submitted` by an older version's batch, which committed that before its sends and
            # may have died after: the venue may have it. Ask before sending again.
            report = gateway.fetch_order(order.client_order_id, order.symbol)
            if report is None:
                report = _order_resend_locked(order, gateway, gate)
            if report is not None:
                reports.append((order, report))
            continue
        if order.status != OrderStatus.PENDING:
            continue  # already handled by an earlier delivery
        refusal = gate.refusal(order)
        if refusal:
            _order_reject_locked(order, refusal)
            continue
        # A `pending` order never reached the venue: its send and its `submitted` commit together.
        order_transition(order, OrderStatus.SUBMITTED)
        order.submitted_at = now
        to_send.append(order)
    if to_send:
        outcomes = gateway.submit_orders([order_request(order) for order in to_send])
        if len(to_send) > 1:
            logger.info("group commit: %s orders sent to %s in one transaction", len(to_send), gateway.exchange)
        for order, outcome in zip(to_send, outcomes, strict=True):
            if isinstance(outcome, PermanentExchangeError):
                # The venue's refusal (a rejected venue order) is kept: it is part of this transaction.
                _order_reject_locked(order, f"venue refused: {outcome}")
            else:
                reports.append((order, outcome))
    new_fills = _orders_book_reports(reports, gateway)
    for (order, _), count in zip(reports, new_fills, strict=True):
        _log_fills(order, count)


def _order_resend_locked(order: Order, gateway: Gateway, gate: TradingGate) -> VenueOrderReport | None:
    """Send again a `submitted` order the venue does not know (see `_orders_send_locked`)."""
    refusal = gate.refusal(order)
    if refusal:
        _order_reject_locked(order, refusal)
        return None
    try:
        return gateway.submit_order(order_request(order), new=False)
    except PermanentExchangeError as exc:
        _order_reject_locked(order, f"venue refused: {exc}")
        return None


def _order_execute(*, order_id: int, gateway: Gateway | None, gate: TradingGate | None) -> Order:
    order = Order.objects.select_related("agent").get(pk=order_id)
    if order.status not in (OrderStatus.PENDING, OrderStatus.SUBMITTED):
        return order  # already handled by an earlier delivery
    gateway = gateway or gateway_for(order.exchange)
    if order.status == OrderStatus.SUBMITTED:
        # A previous delivery may have reached the venue before dying: ask before sending again.
        report = gateway.fetch_order(order.client_order_id, order.symbol)
        if report is not None:
            return order_apply_report(order_id=order_id, report=report, gateway=gateway)
    request = order_request(order)
    try:
        if gate is None:
            with trading_gate() as held:
                report = _send_under_gate(order_id, request, gateway, held)
        else:
            report = _send_under_gate(order_id, request, gateway, gate)
    except TradingHalted as exc:
        return order_reject(order_id=order_id, reason=str(exc))
    except PermanentExchangeError as exc:
        return order_reject(order_id=order_id, reason=f"venue refused: {exc}")
    if report is None:
        return Order.objects.select_related("agent").get(pk=order_id)  # another delivery got there first
    crash_point("order.after_send", key=order.client_order_id)  # the venue has it, the database not yet
    return order_apply_report(order_id=order_id, report=report, gateway=gateway)


def _send_under_gate(order_id: int, request: OrderRequest, gateway: Gateway,
                     gate: TradingGate) -> VenueOrderReport | None:
    """The last check and the send, while the caller holds the trading gate."""
    with transaction.atomic():
        order = lock_order(order_id)
        if order.status not in (OrderStatus.PENDING, OrderStatus.SUBMITTED):
            return None
        refusal = gate.refusal(order)
        if refusal:
            raise TradingHalted(refusal)
        if order.status == OrderStatus.PENDING:
            order_transition(order, OrderStatus.SUBMITTED)
            order.submitted_at = timezone.now()
            order.save()
    crash_point("order.before_send", key=request.client_order_id)  # committed `submitted`, not sent
    return gateway.submit_order(request)


def orders_execute_batch(*, order_ids: list[int]) -> list[Order]:
    """Execute several orders under one hold of the trading gate (the kill switch's flattening).

    Orders for a venue in this database (the paper venue) go in one transaction
    (`_orders_execute_local`); the others as described in `_orders_execute_remote`.
    """
    gateways: dict[str, Gateway] = {}
    local: list[int] = []
    remote: list[int] = []
    for pk, exchange in Order.objects.filter(pk__in=order_ids).order_by("pk").values_list("pk", "exchange"):
        gateway = gateways.setdefault(exchange, gateway_for(exchange))
        (local if _shares_database(gateway) else remote).append(pk)
    if local:
        try:
            _orders_execute_local(order_ids=local, gateways=gateways)
        except DatabaseError as exc:
            # The batch rolled back as a whole (a deadlock with another batch, a constraint): nothing
            # of it reached the venue's books. Send each order on its own instead.
            logger.warning("batch of %s orders rolled back (%s): sending them one by one", len(local), exc)
            for pk in local:
                order_execute(order_id=pk)
    if remote:
        _orders_execute_remote(order_ids=remote)
    return list(Order.objects.filter(pk__in=order_ids).select_related("agent").order_by("pk"))


def _orders_execute_local(*, order_ids: list[int], gateways: dict[str, Gateway]) -> None:
    """A batch for venues in this database: every order locked at once, checked against the safety
    state read once under the gate, sent and booked — all in one transaction, one venue operation
    and one booking per venue (`_orders_send_locked`), so the batch costs a handful of queries."""
    with transaction.atomic():
        gate = trading_gate_in_transaction()
        by_exchange: dict[str, list[Order]] = {}
        for order in lock_orders_to_send(order_ids):
            by_exchange.setdefault(order.exchange, []).append(order)
        for exchange, orders in by_exchange.items():
            _orders_send_locked(orders, gateways[exchange], gate)


def _orders_execute_remote(*, order_ids: list[int]) -> None:
    """Orders for remote venues under one hold of the trading gate.

    1. One transaction moves every order the gate allows to `submitted` (and rejects the
       others): the write-ahead step, committed before anything is sent.
    2. One send per order, each booked as the venue answers.
    Orders found already `submitted` (a redelivered batch) take the single-order path, which
    asks the venue before sending again.
    """
    resend: list[int] = []
    to_send: list[Order] = []
    with trading_gate() as gate:
        with transaction.atomic():
            for order in lock_orders_to_send(order_ids):
                if order.status == OrderStatus.SUBMITTED:
                    resend.append(order.pk)
                    continue
                refusal = gate.refusal(order)
                if refusal:
                    order_transition(order, OrderStatus.REJECTED)
                    order.reject_reason = refusal
                    order.save()
                    _after_reject(refusal)
                    continue
                order_transition(order, OrderStatus.SUBMITTED)
                order.submitted_at = timezone.now()
                order.save()
                to_send.append(order)
        for order_id in resend:
            order_execute(order_id=order_id, gate=gate)
        by_exchange: dict[str, list[Order]] = {}
        for order in to_send:
            by_exchange.setdefault(order.exchange, []).append(order)
        for exchange, orders in by_exchange.items():
            gateway = gateway_for(exchange)
            for order in orders:
                _send_and_book(order, gateway)


def order_request(order: Order) -> OrderRequest:
    """What the venue is sent for this order."""
    return OrderRequest(
        client_order_id=order.client_order_id, symbol=order.symbol, side=order.side, order_type=order.order_type,
        quantity=order.quantity, price=order.price, reduce_only=order.reduce_only,
        account=venue_account(order.agent_id),
    )


def _send_and_book(order: Order, gateway: Gateway) -> None:
    try:
        with transaction.atomic():
            report = gateway.submit_order(order_request(order))
            order_apply_report(order_id=order.pk, report=report, gateway=gateway)
    except PermanentExchangeError as exc:
        order_reject(order_id=order.pk, reason=f"venue refused: {exc}")


def order_apply_report(*, order_id: int, report: VenueOrderReport, gateway: Gateway) -> Order:
    """Record what the venue says about an order: new fills, status, fees, realized PnL."""
    with transaction.atomic():
        order = lock_order(order_id)
        new_fills = _order_book_report(order, report, gateway)
    _log_fills(order, new_fills)
    return order


def _log_fills(order: Order, new_fills: int) -> None:
    if new_fills:  # the last link of tick → order → fill in the logs (root_task_id is the tick's task)
        logger.info("order %s: %s fill(s), filled %s of %s at %s: %s", order.client_order_id, new_fills,
                    order.filled_quantity, order.quantity, order.average_fill_price, order.status,
                    extra={"order_id": order.pk, "agent_id": order.agent_id})


def _order_book_report(order: Order, report: VenueOrderReport, gateway: Gateway) -> int:
    """Apply a venue report to an order the caller holds locked; saves it. Returns the number of new fills."""
    return _orders_book_reports([(order, report)], gateway)[0]


def _orders_book_reports(reports: list[tuple[Order, VenueOrderReport]], gateway: Gateway) -> list[int]:
    """Apply venue reports to orders the caller holds locked, in order, and write them: new fills,
    positions (locked together, `lock_positions`), the trades' PnL at the venue, the orders' state —
    one statement each, however many orders. Returns the number of new fills of each order.

    Two orders of one agent in one symbol move the same position object, one after the other,
    as two bookings in a row would.
    """
    # Fills are only ever written here, each adding to filled_quantity: an order with nothing
    # filled has no fills yet, and the query for the known ones can be skipped.
    filled_before = [order.pk for order, _ in reports if order.filled_quantity]
    known: dict[int, set[str]] = {}
    for order_id, trade_id in (Fill.objects.filter(order_id__in=filled_before).values_list("order_id", "trade_id")
                               if filled_before else ()):
        known.setdefault(order_id, set()).add(trade_id)
    new_fills = [[f for f in report.fills if f.trade_id not in known.get(order.pk, ())] for order, report in reports]
    booked = zip(reports, new_fills, strict=True)
    positions = lock_positions({(order.agent_id, order.symbol) for (order, _), fills in booked if fills})
    fills: list[Fill] = []
    pnls: dict[str, Decimal] = {}
    partly_filled: list[Order] = []
    for (order, report), venue_fills in zip(reports, new_fills, strict=True):
        position = positions.get((order.agent_id, order.symbol))
        notional = (order.average_fill_price or ZERO) * order.filled_quantity
        for venue_fill in venue_fills:
            change = position_apply_fill(
                quantity=position.quantity, average_price=position.average_price, side=order.side,
                fill_quantity=venue_fill.quantity, fill_price=venue_fill.price, fee=venue_fill.fee,
            )
            fills.append(Fill(
                order=order, agent_id=order.agent_id, exchange=order.exchange, trade_id=venue_fill.trade_id,
                symbol=order.symbol, side=order.side, quantity=venue_fill.quantity, price=venue_fill.price,
                fee=venue_fill.fee, fee_currency=venue_fill.fee_currency, liquidity=venue_fill.liquidity,
                realized_pnl=change.realized_pnl, executed_at=venue_fill.executed_at,
            ))
            position.quantity, position.average_price = change.quantity, change.average_price
            position.realized_pnl += change.realized_pnl
            position.fees_paid += venue_fill.fee
            if order.filled_quantity == 0:
                metrics.TICK_TO_FILL.observe(max(0.0, (venue_fill.executed_at - order.created_at).total_seconds()))
            order.filled_quantity += venue_fill.quantity
            order.fee += venue_fill.fee
            order.pnl += change.realized_pnl
            notional += venue_fill.quantity * venue_fill.price
            pnls[venue_fill.trade_id] = change.realized_pnl
            metrics.FILLS.labels(order.agent.name, order.symbol, order.mode).inc()
        if order.filled_quantity > 0:
            order.average_fill_price = notional / order.filled_quantity
        order.venue_order_id = report.venue_order_id or order.venue_order_id
        target = _status_from_report(order, report)
        if target == OrderStatus.PARTIALLY_FILLED and venue_fills:
            partly_filled.append(order)
        if target != order.status:
            order_transition(order, target)
            if target == OrderStatus.REJECTED:
                order.reject_reason = report.reject_reason or "rejected by the venue"
                _after_reject(order.reject_reason)
    if fills:
        Fill.objects.bulk_create(fills)
        rows_update(list(positions.values()), POSITION_STATE_FIELDS)
        gateway.record_realized_pnl(pnls)
        agent_ids = sorted({agent_id for agent_id, _ in positions})
        transaction.on_commit(lambda: breakers_check_soon(["daily_loss", "consecutive_losses", "drawdown"],
                                                          agent_ids=agent_ids))
    rows_update([order for order, _ in reports], Order.STATE_FIELDS)  # not the whole row: the ORM's cost grows with it
    for order in partly_filled:
        crash_point("order.partial_fill", key=order.client_order_id)  # fills written, not committed
    return [len(venue_fills) for venue_fills in new_fills]


# What booking a fill changes in a position.
POSITION_STATE_FIELDS = ("quantity", "average_price", "realized_pnl", "fees_paid", "updated_at")


def _status_from_report(order: Order, report: VenueOrderReport) -> str:
    if order.filled_quantity >= order.quantity:
        return OrderStatus.EXECUTED
    if report.status == "rejected" and order.filled_quantity == 0:
        return OrderStatus.REJECTED
    if report.status == "cancelled":
        return OrderStatus.CANCELLED
    if order.filled_quantity > 0:
        return OrderStatus.PARTIALLY_FILLED
    if order.status == OrderStatus.PENDING:
        return OrderStatus.SUBMITTED
    return order.status


def order_cancel(*, order_id: int, reason: str, gateway: Gateway | None = None) -> Order:
    """Cancel an open order. Cancels never pass the trading gate: they always go."""
    order = Order.objects.select_related("agent").get(pk=order_id)
    if order.status not in OPEN_STATUSES:
        return order
    if order.status == OrderStatus.PENDING:
        with transaction.atomic():
            order = lock_order(order_id)
            if order.status == OrderStatus.PENDING:
                order_transition(order, OrderStatus.CANCELLED)
                order.reject_reason = reason
                order.save()
                return order
    gateway = gateway or gateway_for(order.exchange)
    report = gateway.cancel_order(order.client_order_id, order.symbol)
    if report is None:
        with transaction.atomic():
            order = lock_order(order_id)
            if order.status in OPEN_STATUSES:
                order_transition(order, OrderStatus.CANCELLED)
                order.reject_reason = reason
                order.save()
        return order
    return order_apply_report(order_id=order_id, report=report, gateway=gateway)


def order_refresh(*, order_id: int, gateway: Gateway | None = None) -> Order:
    """Ask the venue about an open order and record what changed (fills of a resting order...).

    Used by the paper venue's matching pass and safe to run any time: replayed fills are no-ops.
    """
    order = Order.objects.select_related("agent").get(pk=order_id)
    if order.status not in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED):
        return order  # pending: order_execute's job; terminal: nothing more to learn
    gateway = gateway or gateway_for(order.exchange)
    report = gateway.fetch_order(order.client_order_id, order.symbol)
    if report is None:
        return order
    return order_apply_report(order_id=order_id, report=report, gateway=gateway)


# The bulk cancel below writes statuses with UPDATE, bypassing order_transition(); these are
# the moves it makes, checked once here against the table so the two can never disagree.
for _moved_from in (OrderStatus.PENDING, OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED):
    check_transition(_moved_from, OrderStatus.CANCELLED)


def orders_cancel_open(*, reason: str) -> int:
    """Cancel every open order, fast enough for the kill switch (1,000 orders in well under 2 s).

    Orders never sent are cancelled with one UPDATE; its WHERE clause is re-checked under the
    row lock, so an order a worker is marking `submitted` at that moment is skipped here and
    refused by that worker's own kill-switch re-check. Orders at a venue are cancelled in bulk
    per venue and symbol; those the venue reports untouched are closed with one UPDATE, those
    with new fills go through `order_apply_report` one by one.
    """
    now = timezone.now()
    counts: dict[tuple[str, str, str], int] = {}

    def close(ids: list[int], from_statuses: list[str]) -> int:
        rows = list(Order.objects.filter(pk__in=ids, status__in=from_statuses)
                    .values_list("agent__name", "symbol", "mode"))
        done = Order.objects.filter(pk__in=ids, status__in=from_statuses).update(
            status=OrderStatus.CANCELLED, reject_reason=reason, closed_at=now, updated_at=now)
        for key in rows:
            counts[key] = counts.get(key, 0) + 1
        return done

    pending_ids = list(Order.objects.filter(status=OrderStatus.PENDING).values_list("pk", flat=True))
    cancelled = close(pending_ids, [OrderStatus.PENDING])
    at_venue = Order.objects.filter(status__in=[OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED])
    groups: dict[tuple[str, str], list[tuple[int, str, Decimal]]] = {}
    for pk, exchange, symbol, cid, filled in at_venue.values_list("pk", "exchange", "symbol", "client_order_id",
                                                                   "filled_quantity"):
        groups.setdefault((exchange, symbol), []).append((pk, cid, filled))
    for (exchange, symbol), rows in groups.items():
        gateway = gateway_for(exchange)
        reports = gateway_cancel_orders(gateway, [cid for _, cid, _ in rows], symbol)
        quiet, busy = [], []
        for pk, cid, filled in rows:
            report = reports.get(cid)
            if report is not None and report.status == "cancelled" and report.filled_quantity == filled:
                quiet.append(pk)
            else:
                busy.append((pk, report))
        cancelled += close(quiet, [OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED])
        for pk, report in busy:
            order = (order_apply_report(order_id=pk, report=report, gateway=gateway) if report is not None
                     else order_cancel(order_id=pk, reason=reason, gateway=gateway))
            cancelled += order.status == OrderStatus.CANCELLED
    for (agent_name, symbol, mode), n in counts.items():
        metrics.ORDERS.labels(OrderStatus.CANCELLED, agent_name, symbol, mode).inc(n)
    return cancelled


def open_order_ids() -> list[int]:
    return list(Order.objects.filter(status__in=OPEN_STATUSES).values_list("pk", flat=True))
