"""PaperGateway: the gateway protocol over the paper venue, timed like a real API."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from django.utils import timezone

from paper.markets import paper_market
from paper.venue import PaperVenue
from tinywindow import metrics
from trading.feeds.base import Feed
from trading.gateways.base import Market, OrderRequest, VenueOrderReport

T = TypeVar("T")


class PaperGateway:
    exchange = "paper"

    def __init__(self, *, feed: Feed) -> None:
        self.venue = PaperVenue(feed=feed)

    def _timed(self, endpoint: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = call()
            outcome = "ok"
            return result
        finally:
            metrics.API_LATENCY.labels(self.exchange, endpoint, outcome).observe(time.perf_counter() - started)

    def market(self, symbol: str) -> Market:
        return paper_market(symbol)

    def submit_order(self, request: OrderRequest) -> VenueOrderReport:
        return self._timed("create_order", lambda: self.venue.submit(request, now=timezone.now()))

    def fetch_order(self, client_order_id: str, symbol: str) -> VenueOrderReport | None:
        return self._timed("fetch_order", lambda: self.venue.fetch(client_order_id))

    def cancel_order(self, client_order_id: str, symbol: str) -> VenueOrderReport | None:
        return self._timed("cancel_order", lambda: self.venue.cancel(client_order_id))

    def record_realized_pnl(self, trade_id: str, pnl: Decimal) -> None:
        self.venue.set_trade_pnl(trade_id, pnl)
