"""The paper venue: a simulated spot exchange backed by PostgreSQL.

It behaves like a real venue towards the gateway:
- it knows orders by `client_order_id`, so a re-sent order returns the original instead of
  trading twice;
- it holds funds: a buy locks quote (limit price, or the expected market price, plus the
  taker fee), a sell locks base; an order the account cannot cover is refused with the
  `insufficient_funds` code (the gateways raise `InsufficientFunds` for it);
- market orders and crossing limit orders trade at once as *taker*: at the feed's price moved
  against them by slippage that grows with the order's share of the candle's volume;
- limit orders that do not cross *rest* on the book; a later matching pass (beat, every
  second or two: `paper.tasks.match_resting_orders`) fills them as *maker* at their limit
  price once the market reaches it, at the maker fee;
- one pass trades at most `max_volume_share` of the last 1-minute candle's volume per order:
  a bigger order fills partly now and the rest on later passes;
- every call takes `latency_ms` (PAPER_LATENCY_MS), as a network round trip would.

Each fill is one `paper_orders` row with its own trade id; the order service writes the
realized PnL back onto it (`set_trade_pnl`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction

from paper.fills import FillModel, buy_affordable, fill_fee
from paper.markets import PAPER_MARKETS, paper_market
from paper.models import PaperOrder, PaperVenueOrder
from paper.services.balances import (
    AccountBalances,
    balance_credit,
    balance_hold,
    balance_release,
    balance_spend,
    balances_lock_accounts,
    balances_save,
)
from tinywindow.fields import ZERO
from tinywindow.rows import rows_update
from trading.feeds.base import Feed
from trading.gateways.base import Market, OrderRequest, VenueFill, VenueOrderReport

logger = logging.getLogger(__name__)

REJECT_INSUFFICIENT_FUNDS = "insufficient_funds"
REJECT_INVALID_ORDER = "invalid_order"

Status = PaperVenueOrder.Status
# The fields of a venue order an operation changes, written once at its end.
VENUE_ORDER_STATE = ["status", "filled_quantity", "locked_asset", "locked_amount", "rested", "reject_code",
                     "reject_reason", "updated_at"]


class PaperVenue:
    def __init__(self, *, feed: Feed, account: str = "paper", taker_fee_rate: Decimal | None = None,
                 maker_fee_rate: Decimal | None = None, base_slippage_bps: Decimal | None = None,
                 max_volume_share: Decimal | None = None, latency_ms: int | None = None) -> None:
        self.feed = feed
        self.account = account
        # The fill arithmetic lives in paper/fills.py, shared with the backtester.
        self.fill_model = FillModel.from_settings(
            taker_fee_rate=taker_fee_rate, maker_fee_rate=maker_fee_rate, base_slippage_bps=base_slippage_bps,
            max_volume_share=max_volume_share,
        )
        self.latency_ms = settings.PAPER_LATENCY_MS if latency_ms is None else latency_ms
        # How to fund an account on its first order (account name -> balances), or None: accounts
        # are seeded beforehand (the local exchange's API-key accounts). See balances_lock_accounts.
        self.funding: Callable[[str], Mapping[str, Decimal]] | None = None

    # --- orders ---------------------------------------------------------------------------
    def submit(self, request: OrderRequest, *, now: datetime, new: bool = False) -> VenueOrderReport:
        """Accept (or refuse) one order and trade what can trade at once. Idempotent by client id.

        `new`: the caller vouches that the venue has never seen this client id and that nobody
        else can send it meanwhile (TinyWindow's own order path: a `pending` order held under its
        row lock, in the transaction that will book it). The look-up and the savepoint that make
        a re-send or a race harmless are then skipped (three round trips); the unique client id
        still stands behind it — a duplicate fails the caller's transaction, nothing trades twice.
        """
        now = self._simulate_latency(now)
        if not new:
            existing = PaperVenueOrder.objects.filter(client_order_id=request.client_order_id).first()
            if existing is not None:
                logger.info("paper venue: %s already known, returning it", request.client_order_id)
                return self.report(existing)
        try:
            with transaction.atomic(savepoint=not new):
                return self._submit_new([request], now=now)[0]
        except IntegrityError:
            if new:
                raise  # the caller's promise was wrong: its transaction fails, nothing trades twice
            # Two deliveries raced on the same client_order_id: the other one won.
            venue_order = PaperVenueOrder.objects.get(client_order_id=request.client_order_id)
            return self.report(venue_order)

    def submit_many(self, requests: list[OrderRequest], *, now: datetime) -> list[VenueOrderReport]:
        """`submit(new=True)` for several orders at once, in order, in the caller's transaction:
        one insert of the venue orders, one lock of every account's balances, one insert of the
        trades, one write of the balances and one of the orders, however many orders there are.
        The caller vouches for every client id as for `new` (a duplicate fails its transaction)."""
        return self._submit_new(requests, now=self._simulate_latency(now))

    def _submit_new(self, requests: list[OrderRequest], *, now: datetime) -> list[VenueOrderReport]:
        venue_orders = PaperVenueOrder.objects.bulk_create([
            PaperVenueOrder(client_order_id=r.client_order_id, account=r.account or self.account, symbol=r.symbol,
                            side=r.side, order_type=r.order_type, quantity=r.quantity, price=r.price)
            for r in requests
        ])
        refusals = [self._refusal(request, now=now) for request in requests]
        accepted = [v for v, (code, _) in zip(venue_orders, refusals, strict=True) if not code]
        books = self._balances_many(accepted)
        trades: list[PaperOrder] = []  # a new order's trades are all made here: no need to read them back
        trades_of: dict[int, list[PaperOrder]] = {}
        for venue_order, (code, reason) in zip(venue_orders, refusals, strict=True):
            balances = books.get(venue_order.account) if not code else None
            if balances is not None:
                code, reason = self._hold_funds(venue_order, now=now, balances=balances)
            if code:
                venue_order.status = Status.REJECTED
                venue_order.reject_code, venue_order.reject_reason = code, reason
                continue
            trade = self._match(venue_order, now=now, balances=balances)
            trades_of[venue_order.pk] = [trade] if trade else []
            trades += trades_of[venue_order.pk]
        PaperOrder.objects.bulk_create(trades)
        balances_save(books.values(), now=now)
        rows_update(venue_orders, VENUE_ORDER_STATE, now=now)
        return [self.report(v, trades=trades_of.get(v.pk, [])) for v in venue_orders]

    def fetch(self, client_order_id: str) -> VenueOrderReport | None:
        self._simulate_latency(None)
        venue_order = PaperVenueOrder.objects.filter(client_order_id=client_order_id).first()
        return self.report(venue_order) if venue_order else None

    def fetch_many(self, client_order_ids: list[str]) -> dict[str, VenueOrderReport]:
        """`fetch` of many orders in two statements (the orders, their trades); the ones the venue
        does not know are left out."""
        self._simulate_latency(None)
        found = PaperVenueOrder.objects.filter(client_order_id__in=client_order_ids).prefetch_related("trades")
        return {venue_order.client_order_id: self.report(venue_order) for venue_order in found}

    def cancel(self, client_order_id: str) -> VenueOrderReport | None:
        self._simulate_latency(None)
        with transaction.atomic():
            venue_order = PaperVenueOrder.objects.select_for_update().filter(client_order_id=client_order_id).first()
            if venue_order is None:
                return None
            if venue_order.status == Status.OPEN:
                balances = self._balances(venue_order)
                self._release_hold(venue_order, balances)
                balances.save()
                venue_order.status = Status.CANCELLED
                venue_order.save(update_fields=["status", "locked_amount", "updated_at"])
        return self.report(venue_order)

    def set_trade_pnl(self, pnls: Mapping[str, Decimal]) -> None:
        """Store the realized PnL the books worked out for these trades (trade id -> PnL), one UPDATE."""
        rows_update([PaperOrder(trade_id=trade_id, pnl=pnl) for trade_id, pnl in pnls.items()], ("pnl",),
                    key="trade_id")

    def match_open_orders(self, *, now: datetime) -> list[str]:
        """One matching pass over every open order; returns the client ids that traded or ended.

        Each order is matched in its own transaction under its row lock; rows another pass
        holds are skipped (`skip_locked`), so concurrent passes never trade an order twice.
        """
        touched: list[str] = []
        open_ids = list(
            PaperVenueOrder.objects.filter(status=Status.OPEN, symbol__in=list(PAPER_MARKETS))
            .order_by("id").values_list("id", flat=True)
        )
        for pk in open_ids:
            with transaction.atomic():
                locked = PaperVenueOrder.objects.select_for_update(skip_locked=True)
                venue_order = locked.filter(pk=pk, status=Status.OPEN).first()
                if venue_order is None:
                    continue
                before = (venue_order.filled_quantity, venue_order.status)
                state = [getattr(venue_order, f) for f in VENUE_ORDER_STATE]
                balances = self._balances(venue_order)
                trade = self._match(venue_order, now=now, balances=balances)
                if trade is not None:
                    trade.save()
                balances.save()
                if [getattr(venue_order, f) for f in VENUE_ORDER_STATE] != state:
                    venue_order.save(update_fields=VENUE_ORDER_STATE)
                if (venue_order.filled_quantity, venue_order.status) != before:
                    touched.append(venue_order.client_order_id)
        return touched

    # --- checks and funds -----------------------------------------------------------------
    def _refusal(self, request: OrderRequest, *, now: datetime) -> tuple[str, str]:
        market = paper_market(request.symbol)
        if request.side not in ("buy", "sell") or request.order_type not in ("market", "limit"):
            return REJECT_INVALID_ORDER, f"unsupported order: {request.side} {request.order_type}"
        if request.quantity < market.min_amount:
            return REJECT_INVALID_ORDER, f"quantity {request.quantity} below the minimum {market.min_amount}"
        if market.round_amount(request.quantity) != request.quantity:
            return REJECT_INVALID_ORDER, f"quantity {request.quantity} is not a multiple of {market.amount_step}"
        if request.order_type == "limit":
            if request.price is None or request.price <= 0:
                return REJECT_INVALID_ORDER, "a limit order needs a positive price"
            if market.round_price(request.price) != request.price:
                return REJECT_INVALID_ORDER, f"price {request.price} is not a multiple of {market.price_step}"
        price = request.price if request.order_type == "limit" else self.feed.last_price(request.symbol, now)
        notional = request.quantity * price
        if notional < market.min_notional:
            return REJECT_INVALID_ORDER, f"notional {notional:.2f} below the minimum {market.min_notional}"
        return "", ""

    def _balances(self, venue_order: PaperVenueOrder) -> AccountBalances:
        """The order's account's base and quote rows, locked for this operation (after the order's own row)."""
        return self._balances_many([venue_order])[venue_order.account]

    def _balances_many(self, venue_orders: list[PaperVenueOrder]) -> dict[str, AccountBalances]:
        """Each order's account's base and quote rows, all locked with one query (account, asset order)."""
        wanted: dict[str, set[str]] = {}
        for venue_order in venue_orders:
            market = paper_market(venue_order.symbol)
            wanted.setdefault(venue_order.account, set()).update((market.base, market.quote))
        return balances_lock_accounts(wanted, funding=self.funding)

    def _hold_funds(self, venue_order: PaperVenueOrder, *, now: datetime,
                    balances: AccountBalances) -> tuple[str, str]:
        """Lock what the order may spend; refuse it when the account cannot cover it (the caller saves)."""
        market = paper_market(venue_order.symbol)
        if venue_order.side == "sell":
            asset, need = market.base, venue_order.quantity
        else:
            asset = market.quote
            if venue_order.order_type == "limit":
                need = self.fill_model.buy_hold(quantity=venue_order.quantity, reference=ZERO, volume=ZERO,
                                                market=market, limit_price=venue_order.price)
            else:
                need = self.fill_model.buy_hold(
                    quantity=venue_order.quantity, reference=self.feed.last_price(venue_order.symbol, now),
                    volume=self._candle_volume(venue_order.symbol, now), market=market,
                )
        balance = balances[asset]
        if balance.free < need:
            return REJECT_INSUFFICIENT_FUNDS, (
                f"insufficient balance: the order needs {need.normalize():f} {asset}, "
                f"{venue_order.account} has {balance.free.normalize():f} {asset} free"
            )
        balance_hold(balance, need)
        venue_order.locked_asset, venue_order.locked_amount = asset, need
        return "", ""

    def _release_hold(self, venue_order: PaperVenueOrder, balances: AccountBalances) -> None:
        """Give back what an ending order still holds (the caller saves the order and the balances)."""
        if venue_order.locked_amount > 0 and venue_order.locked_asset:
            balance_release(balances[venue_order.locked_asset], venue_order.locked_amount)
        venue_order.locked_amount = ZERO

    # --- matching -------------------------------------------------------------------------
    def _match(self, venue_order: PaperVenueOrder, *, now: datetime, balances: AccountBalances) -> PaperOrder | None:
        """Trade what this order can trade now; returns the trade made, if any. Called under the
        order's row lock; changes the order and the balances in memory and makes the trade
        unsaved (the caller saves all three)."""
        market = paper_market(venue_order.symbol)
        remaining = venue_order.quantity - venue_order.filled_quantity
        if remaining <= 0 or venue_order.status != Status.OPEN:
            return None
        is_limit = venue_order.order_type == "limit"
        quote = self.fill_model.quote(
            side=venue_order.side, remaining=remaining, reference=self.feed.last_price(venue_order.symbol, now),
            volume=self._candle_volume(venue_order.symbol, now), market=market,
            limit_price=venue_order.price if is_limit else None, rested=venue_order.rested,
        )
        if quote is None:
            # Not crossing, or nothing traded in this candle to match against: try next pass.
            self._rest(venue_order)
            return None
        trade = self._fill(venue_order, market=market, quantity=quote.quantity, price=quote.price,
                           fee_rate=quote.fee_rate, liquidity=quote.liquidity, slippage_bps=quote.slippage_bps,
                           balances=balances)
        if venue_order.status == Status.OPEN and is_limit:
            self._rest(venue_order)  # the rest of a limit order now sits on the book
        return trade

    def _rest(self, venue_order: PaperVenueOrder) -> None:
        if venue_order.order_type == "limit":
            venue_order.rested = True

    def _fill(self, venue_order: PaperVenueOrder, *, market: Market, quantity: Decimal, price: Decimal,
              fee_rate: Decimal, liquidity: str, slippage_bps: Decimal,
              balances: AccountBalances) -> PaperOrder | None:
        base, quote = balances[market.base], balances[market.quote]
        if venue_order.side == "buy":
            held = venue_order.locked_amount if venue_order.locked_asset == market.quote else ZERO
            quantity = buy_affordable(quantity=quantity, price=price, fee_rate=fee_rate,
                                      available=held + quote.free, market=market)
            if quantity <= 0:  # the account cannot pay for any more of it: end the order
                self._end(venue_order, Status.CANCELLED, balances, reason="insufficient balance to fill the rest")
                return None
            fee = fill_fee(quantity, price, fee_rate)
            used = balance_spend(quote, held=held, amount=quantity * price + fee)
            venue_order.locked_amount -= used
            balance_credit(base, quantity)
        else:
            fee = fill_fee(quantity, price, fee_rate)
            used = balance_spend(base, held=venue_order.locked_amount, amount=quantity)
            venue_order.locked_amount -= used
            balance_credit(quote, quantity * price - fee)
        # Trades are made only here, each adding to filled_quantity: nothing filled, no trades yet.
        number = venue_order.trades.count() + 1 if venue_order.filled_quantity else 1
        trade = PaperOrder(  # saved by the caller, with the operation's other trades
            venue_order=venue_order, trade_id=f"{venue_order.venue_order_id}-{number}",
            client_order_id=venue_order.client_order_id, account=venue_order.account, symbol=venue_order.symbol,
            side=venue_order.side, quantity=quantity, price=price, fee=fee, fee_currency=market.quote,
            liquidity=liquidity, slippage_bps=slippage_bps,
        )
        venue_order.filled_quantity += quantity
        if venue_order.filled_quantity >= venue_order.quantity:
            self._end(venue_order, Status.FILLED, balances)
        return trade

    def _end(self, venue_order: PaperVenueOrder, status: str, balances: AccountBalances, *, reason: str = "") -> None:
        self._release_hold(venue_order, balances)
        venue_order.status = status
        if reason:
            venue_order.reject_reason = reason

    def _candle_volume(self, symbol: str, now: datetime) -> Decimal:
        candles = self.feed.candles(symbol, "1m", limit=1, end=now)
        return candles[-1].volume if candles else ZERO

    def _simulate_latency(self, now: datetime | None) -> datetime | None:
        """Sleep like a network round trip would; the venue then sees the market that much later."""
        if self.latency_ms <= 0:
            return now
        time.sleep(self.latency_ms / 1000)
        return now + timedelta(milliseconds=self.latency_ms) if now is not None else None

    # --- reports --------------------------------------------------------------------------
    def report(self, venue_order: PaperVenueOrder, *, trades: list[PaperOrder] | None = None) -> VenueOrderReport:
        """What the venue says about the order; `trades`: all of its trades, when the caller has them."""
        if trades is not None:
            venue_order._prefetched_objects_cache = {"trades": trades}  # what prefetch_related would set
        fills = tuple(
            VenueFill(
                trade_id=t.trade_id, quantity=t.quantity, price=t.price, fee=t.fee, fee_currency=t.fee_currency,
                liquidity=t.liquidity, executed_at=t.created_at,
            )
            # .all() (sorted here) uses a prefetched list when the caller has one (bulk cancel).
            for t in sorted(venue_order.trades.all(), key=lambda trade: trade.pk)
        )
        return VenueOrderReport(
            client_order_id=venue_order.client_order_id, venue_order_id=venue_order.venue_order_id,
            status=venue_order.status, filled_quantity=venue_order.filled_quantity, fills=fills,
            reject_reason=venue_order.reject_reason, reject_code=venue_order.reject_code,
        )
