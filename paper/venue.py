"""The paper venue: a simulated exchange with fees and slippage, backed by PostgreSQL.

It behaves like a real venue towards the gateway: it knows orders by `client_order_id`
(so a re-sent order returns the original instead of trading twice), fills market orders at
the feed's current price moved against the taker by slippage, charges fees, and reports
trades with its own trade ids.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction

from paper.markets import paper_market
from paper.models import PaperOrder, PaperVenueOrder
from trading.feeds.base import Feed
from trading.gateways.base import OrderRequest, VenueFill, VenueOrderReport

logger = logging.getLogger(__name__)

FEE_QUANTUM = Decimal("0.00000001")
BPS = Decimal("0.0001")
# Extra slippage per unit of (order quantity / candle volume), in bps, capped: a bigger order
# against a thin candle walks further into the book.
IMPACT_BPS_PER_VOLUME_SHARE = Decimal("50")
MAX_SLIPPAGE_BPS = Decimal("100")


def _decimal_or(value: Decimal | None, configured: str) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(configured)


class PaperVenue:
    def __init__(self, *, feed: Feed, account: str = "paper", taker_fee_rate: Decimal | None = None,
                 maker_fee_rate: Decimal | None = None, base_slippage_bps: Decimal | None = None) -> None:
        self.feed = feed
        self.account = account
        self.taker_fee_rate = _decimal_or(taker_fee_rate, settings.PAPER_TAKER_FEE_RATE)
        self.maker_fee_rate = _decimal_or(maker_fee_rate, settings.PAPER_MAKER_FEE_RATE)
        self.base_slippage_bps = _decimal_or(base_slippage_bps, settings.PAPER_BASE_SLIPPAGE_BPS)

    # --- orders ---------------------------------------------------------------------------
    def submit(self, request: OrderRequest, *, now: datetime) -> VenueOrderReport:
        existing = PaperVenueOrder.objects.filter(client_order_id=request.client_order_id).first()
        if existing is not None:
            logger.info("paper venue: %s already known, returning it", request.client_order_id)
            return self.report(existing)
        try:
            with transaction.atomic():
                venue_order = PaperVenueOrder.objects.create(
                    client_order_id=request.client_order_id, account=self.account, symbol=request.symbol,
                    side=request.side, order_type=request.order_type, quantity=request.quantity, price=request.price,
                )
                refusal = self._refusal(request)
                if refusal:
                    venue_order.status = PaperVenueOrder.Status.REJECTED
                    venue_order.reject_reason = refusal
                    venue_order.save(update_fields=["status", "reject_reason", "updated_at"])
                else:
                    self._match(venue_order, now=now)
        except IntegrityError:
            # Two deliveries raced on the same client_order_id: the other one won.
            venue_order = PaperVenueOrder.objects.get(client_order_id=request.client_order_id)
        return self.report(venue_order)

    def fetch(self, client_order_id: str) -> VenueOrderReport | None:
        venue_order = PaperVenueOrder.objects.filter(client_order_id=client_order_id).first()
        return self.report(venue_order) if venue_order else None

    def cancel(self, client_order_id: str) -> VenueOrderReport | None:
        with transaction.atomic():
            venue_order = PaperVenueOrder.objects.select_for_update().filter(client_order_id=client_order_id).first()
            if venue_order is None:
                return None
            if venue_order.status == PaperVenueOrder.Status.OPEN:
                venue_order.status = PaperVenueOrder.Status.CANCELLED
                venue_order.save(update_fields=["status", "updated_at"])
        return self.report(venue_order)

    def set_trade_pnl(self, trade_id: str, pnl: Decimal) -> None:
        PaperOrder.objects.filter(trade_id=trade_id).update(pnl=pnl)

    # --- matching -------------------------------------------------------------------------
    def _refusal(self, request: OrderRequest) -> str:
        market = paper_market(request.symbol)
        if request.quantity < market.min_amount:
            return f"quantity {request.quantity} below the minimum {market.min_amount}"
        if market.round_amount(request.quantity) != request.quantity:
            return f"quantity {request.quantity} is not a multiple of {market.amount_step}"
        if request.order_type == "limit" and (request.price is None or request.price <= 0):
            return "a limit order needs a positive price"
        return ""

    def _match(self, venue_order: PaperVenueOrder, *, now: datetime) -> None:
        market = paper_market(venue_order.symbol)
        reference = self.feed.last_price(venue_order.symbol, now)
        if venue_order.order_type == "limit":
            crosses = (venue_order.side == "buy" and venue_order.price >= reference) or (
                venue_order.side == "sell" and venue_order.price <= reference
            )
            if not crosses:
                return  # rests open; later price moves are matched by the trading-core work
        slippage_bps = self._slippage_bps(venue_order, now=now)
        direction = 1 if venue_order.side == "buy" else -1
        price = market.round_price(reference * (1 + direction * slippage_bps * BPS))
        if venue_order.order_type == "limit":
            # Never worse than the limit.
            price = min(price, venue_order.price) if direction == 1 else max(price, venue_order.price)
        notional = venue_order.quantity * price
        if notional < market.min_notional:
            venue_order.status = PaperVenueOrder.Status.REJECTED
            venue_order.reject_reason = f"notional {notional:.2f} below the minimum {market.min_notional}"
            venue_order.save(update_fields=["status", "reject_reason", "updated_at"])
            return
        fee = (notional * self.taker_fee_rate).quantize(FEE_QUANTUM)
        PaperOrder.objects.create(
            venue_order=venue_order, trade_id=f"{venue_order.venue_order_id}-1",
            client_order_id=venue_order.client_order_id, account=venue_order.account, symbol=venue_order.symbol,
            side=venue_order.side, quantity=venue_order.quantity, price=price, fee=fee, fee_currency=market.quote,
            liquidity="taker", slippage_bps=slippage_bps,
        )
        venue_order.filled_quantity = venue_order.quantity
        venue_order.status = PaperVenueOrder.Status.FILLED
        venue_order.save(update_fields=["filled_quantity", "status", "updated_at"])

    def _slippage_bps(self, venue_order: PaperVenueOrder, *, now: datetime) -> Decimal:
        candles = self.feed.candles(venue_order.symbol, "1m", limit=1, end=now)
        volume = candles[-1].volume if candles else Decimal("0")
        impact = MAX_SLIPPAGE_BPS if volume <= 0 else IMPACT_BPS_PER_VOLUME_SHARE * venue_order.quantity / volume
        return min(self.base_slippage_bps + impact, MAX_SLIPPAGE_BPS).quantize(Decimal("0.0001"))

    # --- reports --------------------------------------------------------------------------
    def report(self, venue_order: PaperVenueOrder) -> VenueOrderReport:
        fills = tuple(
            VenueFill(
                trade_id=t.trade_id, quantity=t.quantity, price=t.price, fee=t.fee, fee_currency=t.fee_currency,
                liquidity=t.liquidity, executed_at=t.created_at,
            )
            for t in venue_order.trades.order_by("id")
        )
        return VenueOrderReport(
            client_order_id=venue_order.client_order_id, venue_order_id=venue_order.venue_order_id,
            status=venue_order.status, filled_quantity=venue_order.filled_quantity, fills=fills,
            reject_reason=venue_order.reject_reason,
        )
