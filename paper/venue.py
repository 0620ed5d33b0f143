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
from datetime import datetime, timedelta
from decimal import ROUND_UP, Decimal

from django.conf import settings
from django.db import IntegrityError, transaction

from paper.markets import PAPER_MARKETS, paper_market
from paper.models import PaperOrder, PaperVenueOrder
from paper.services.balances import balance_credit, balance_hold, balance_release, balance_spend, balances_lock
from tinywindow.fields import ZERO
from trading.feeds.base import Feed
from trading.gateways.base import Market, OrderRequest, VenueFill, VenueOrderReport

logger = logging.getLogger(__name__)

FEE_QUANTUM = Decimal("0.00000001")
BPS = Decimal("0.0001")
# Extra slippage per unit of (order quantity / candle volume), in bps, capped: a bigger order
# against a thin candle walks further into the book.
IMPACT_BPS_PER_VOLUME_SHARE = Decimal("50")
MAX_SLIPPAGE_BPS = Decimal("100")

REJECT_INSUFFICIENT_FUNDS = "insufficient_funds"
REJECT_INVALID_ORDER = "invalid_order"

Status = PaperVenueOrder.Status


def _decimal_or(value: Decimal | str | None, configured: str) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(str(configured))


class PaperVenue:
    def __init__(self, *, feed: Feed, account: str = "paper", taker_fee_rate: Decimal | None = None,
                 maker_fee_rate: Decimal | None = None, base_slippage_bps: Decimal | None = None,
                 max_volume_share: Decimal | None = None, latency_ms: int | None = None) -> None:
        self.feed = feed
        self.account = account
        self.taker_fee_rate = _decimal_or(taker_fee_rate, settings.PAPER_TAKER_FEE_RATE)
        self.maker_fee_rate = _decimal_or(maker_fee_rate, settings.PAPER_MAKER_FEE_RATE)
        self.base_slippage_bps = _decimal_or(base_slippage_bps, settings.PAPER_BASE_SLIPPAGE_BPS)
        self.max_volume_share = _decimal_or(max_volume_share, settings.PAPER_MAX_VOLUME_SHARE)
        self.latency_ms = settings.PAPER_LATENCY_MS if latency_ms is None else latency_ms

    # --- orders ---------------------------------------------------------------------------
    def submit(self, request: OrderRequest, *, now: datetime) -> VenueOrderReport:
        """Accept (or refuse) one order and trade what can trade at once. Idempotent by client id."""
        now = self._simulate_latency(now)
        existing = PaperVenueOrder.objects.filter(client_order_id=request.client_order_id).first()
        if existing is not None:
            logger.info("paper venue: %s already known, returning it", request.client_order_id)
            return self.report(existing)
        try:
            with transaction.atomic():
                venue_order = PaperVenueOrder.objects.create(
                    client_order_id=request.client_order_id, account=request.account or self.account,
                    symbol=request.symbol, side=request.side, order_type=request.order_type,
                    quantity=request.quantity, price=request.price,
                )
                code, reason = self._refusal(request, now=now)
                if not code:
                    code, reason = self._hold_funds(venue_order, now=now)
                if code:
                    venue_order.status = Status.REJECTED
                    venue_order.reject_code, venue_order.reject_reason = code, reason
                    venue_order.save(update_fields=["status", "reject_code", "reject_reason", "updated_at"])
                else:
                    self._match(venue_order, now=now)
        except IntegrityError:
            # Two deliveries raced on the same client_order_id: the other one won.
            venue_order = PaperVenueOrder.objects.get(client_order_id=request.client_order_id)
        return self.report(venue_order)

    def fetch(self, client_order_id: str) -> VenueOrderReport | None:
        self._simulate_latency(None)
        venue_order = PaperVenueOrder.objects.filter(client_order_id=client_order_id).first()
        return self.report(venue_order) if venue_order else None

    def cancel(self, client_order_id: str) -> VenueOrderReport | None:
        self._simulate_latency(None)
        with transaction.atomic():
            venue_order = PaperVenueOrder.objects.select_for_update().filter(client_order_id=client_order_id).first()
            if venue_order is None:
                return None
            if venue_order.status == Status.OPEN:
                self._release_hold(venue_order)
                venue_order.status = Status.CANCELLED
                venue_order.save(update_fields=["status", "locked_amount", "updated_at"])
        return self.report(venue_order)

    def set_trade_pnl(self, trade_id: str, pnl: Decimal) -> None:
        PaperOrder.objects.filter(trade_id=trade_id).update(pnl=pnl)

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
                self._match(venue_order, now=now)
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

    def _hold_funds(self, venue_order: PaperVenueOrder, *, now: datetime) -> tuple[str, str]:
        """Lock what the order may spend; refuse it when the account cannot cover it."""
        market = paper_market(venue_order.symbol)
        if venue_order.side == "sell":
            asset, need = market.base, venue_order.quantity
        else:
            asset = market.quote
            if venue_order.order_type == "limit":
                price = venue_order.price
            else:
                reference = self.feed.last_price(venue_order.symbol, now)
                slippage = self._slippage_bps(venue_order.quantity, self._candle_volume(venue_order.symbol, now))
                # One tick of headroom: the fill price is rounded to the tick and may round up.
                price = reference * (1 + slippage * BPS) + market.price_step
            need = (venue_order.quantity * price * (1 + self.taker_fee_rate)).quantize(FEE_QUANTUM, rounding=ROUND_UP)
        balance = balances_lock(account=venue_order.account, assets=[asset])[asset]
        if balance.free < need:
            return REJECT_INSUFFICIENT_FUNDS, (
                f"insufficient balance: the order needs {need.normalize():f} {asset}, "
                f"{venue_order.account} has {balance.free.normalize():f} {asset} free"
            )
        balance_hold(balance, need)
        balance.save(update_fields=["free", "locked", "updated_at"])
        venue_order.locked_asset, venue_order.locked_amount = asset, need
        venue_order.save(update_fields=["locked_asset", "locked_amount", "updated_at"])
        return "", ""

    def _release_hold(self, venue_order: PaperVenueOrder) -> None:
        """Give back what an ending order still holds (the caller saves the order)."""
        if venue_order.locked_amount > 0 and venue_order.locked_asset:
            asset = venue_order.locked_asset
            balance = balances_lock(account=venue_order.account, assets=[asset])[asset]
            balance_release(balance, venue_order.locked_amount)
            balance.save(update_fields=["free", "locked", "updated_at"])
        venue_order.locked_amount = ZERO

    # --- matching -------------------------------------------------------------------------
    def _match(self, venue_order: PaperVenueOrder, *, now: datetime) -> None:
        """Trade what this order can trade now. Called under the order's row lock."""
        market = paper_market(venue_order.symbol)
        remaining = venue_order.quantity - venue_order.filled_quantity
        if remaining <= 0 or venue_order.status != Status.OPEN:
            return
        reference = self.feed.last_price(venue_order.symbol, now)
        is_limit = venue_order.order_type == "limit"
        buy = venue_order.side == "buy"
        if is_limit and not ((buy and venue_order.price >= reference) or (not buy and venue_order.price <= reference)):
            self._rest(venue_order)
            return
        volume = self._candle_volume(venue_order.symbol, now)
        cap = market.round_amount(self.max_volume_share * volume) if volume > 0 else ZERO
        quantity = min(remaining, cap)
        if quantity <= 0:
            self._rest(venue_order)  # nothing traded in this candle to match against: try next pass
            return
        # A limit order that has sat on the book is hit by someone else: maker, at its own price.
        maker = is_limit and venue_order.rested
        if maker:
            price, slippage_bps, fee_rate = venue_order.price, ZERO, self.maker_fee_rate
        else:
            slippage_bps = self._slippage_bps(quantity, volume)
            direction = 1 if buy else -1
            price = market.round_price(reference * (1 + direction * slippage_bps * BPS))
            if is_limit:  # never worse than the limit
                price = min(price, venue_order.price) if buy else max(price, venue_order.price)
            fee_rate = self.taker_fee_rate
        self._fill(venue_order, market=market, quantity=quantity, price=price, fee_rate=fee_rate,
                   liquidity="maker" if maker else "taker", slippage_bps=slippage_bps)
        if venue_order.status == Status.OPEN and is_limit:
            self._rest(venue_order)  # the rest of a limit order now sits on the book

    def _rest(self, venue_order: PaperVenueOrder) -> None:
        if venue_order.order_type == "limit" and not venue_order.rested:
            venue_order.rested = True
            venue_order.save(update_fields=["rested", "updated_at"])

    def _fill(self, venue_order: PaperVenueOrder, *, market: Market, quantity: Decimal, price: Decimal,
              fee_rate: Decimal, liquidity: str, slippage_bps: Decimal) -> None:
        balances = balances_lock(account=venue_order.account, assets=[market.base, market.quote])
        base, quote = balances[market.base], balances[market.quote]
        if venue_order.side == "buy":
            held = venue_order.locked_amount if venue_order.locked_asset == market.quote else ZERO
            available = held + quote.free
            unit_cost = price * (1 + fee_rate)
            if quantity * unit_cost > available:
                # The price ran away from what the order held (a market order filling over several
                # passes): trade what the account can still pay for, end the order if nothing.
                quantity = market.round_amount(available / unit_cost)
                if quantity <= 0:
                    self._end(venue_order, Status.CANCELLED, reason="insufficient balance to fill the rest")
                    return
            fee = (quantity * price * fee_rate).quantize(FEE_QUANTUM)
            used = balance_spend(quote, held=held, amount=quantity * price + fee)
            venue_order.locked_amount -= used
            balance_credit(base, quantity)
        else:
            fee = (quantity * price * fee_rate).quantize(FEE_QUANTUM)
            used = balance_spend(base, held=venue_order.locked_amount, amount=quantity)
            venue_order.locked_amount -= used
            balance_credit(quote, quantity * price - fee)
        base.save(update_fields=["free", "locked", "updated_at"])
        quote.save(update_fields=["free", "locked", "updated_at"])
        number = venue_order.trades.count() + 1
        PaperOrder.objects.create(
            venue_order=venue_order, trade_id=f"{venue_order.venue_order_id}-{number}",
            client_order_id=venue_order.client_order_id, account=venue_order.account, symbol=venue_order.symbol,
            side=venue_order.side, quantity=quantity, price=price, fee=fee, fee_currency=market.quote,
            liquidity=liquidity, slippage_bps=slippage_bps,
        )
        venue_order.filled_quantity += quantity
        if venue_order.filled_quantity >= venue_order.quantity:
            self._end(venue_order, Status.FILLED)
        else:
            venue_order.save(update_fields=["filled_quantity", "locked_amount", "updated_at"])

    def _end(self, venue_order: PaperVenueOrder, status: str, *, reason: str = "") -> None:
        self._release_hold(venue_order)
        venue_order.status = status
        if reason:
            venue_order.reject_reason = reason
        venue_order.save(update_fields=["status", "filled_quantity", "locked_amount", "reject_reason", "updated_at"])

    def _candle_volume(self, symbol: str, now: datetime) -> Decimal:
        candles = self.feed.candles(symbol, "1m", limit=1, end=now)
        return candles[-1].volume if candles else ZERO

    def _slippage_bps(self, quantity: Decimal, volume: Decimal) -> Decimal:
        impact = MAX_SLIPPAGE_BPS if volume <= 0 else IMPACT_BPS_PER_VOLUME_SHARE * quantity / volume
        return min(self.base_slippage_bps + impact, MAX_SLIPPAGE_BPS).quantize(Decimal("0.0001"))

    def _simulate_latency(self, now: datetime | None) -> datetime | None:
        """Sleep like a network round trip would; the venue then sees the market that much later."""
        if self.latency_ms <= 0:
            return now
        time.sleep(self.latency_ms / 1000)
        return now + timedelta(milliseconds=self.latency_ms) if now is not None else None

    # --- reports --------------------------------------------------------------------------
    def report(self, venue_order: PaperVenueOrder) -> VenueOrderReport:
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
