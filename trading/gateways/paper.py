"""PaperGateway: the gateway protocol over the paper venue, timed like a real API.

It raises the same exceptions a real exchange's gateway does (`InsufficientFunds`,
`InvalidOrder`) when the venue refuses an order, so the order services cannot tell paper
from live. Each agent trades its own paper account (`agent-<id>`), funded on its first
order with the agent's capital in the quote currency (see `paper_account_funding`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from django.utils import timezone

from paper.markets import PAPER_MARKETS, paper_market
from paper.models import PaperOrder
from paper.services.balances import paper_balances
from paper.venue import REJECT_INSUFFICIENT_FUNDS, PaperVenue
from safety.services.stats import api_call_record
from tinywindow import metrics
from tinywindow.exceptions import InsufficientFunds, InvalidOrder, PermanentExchangeError
from tinywindow.fields import ZERO
from trading.feeds.base import Feed
from trading.gateways.base import Market, OrderRequest, VenueOrderReport, VenueTrade

T = TypeVar("T")
ACCOUNT_PREFIX = "agent-"


def paper_account_funding(account: str) -> dict[str, Decimal]:
    """What an agent's paper account starts with: its cash in the quote currency, its longs in base.

    A new agent has no positions, so this is simply its capital. An agent that traded before
    paper balances existed gets what its books say it holds (cash = capital + realized PnL -
    cost of open positions), so its first sell after an upgrade is not refused.
    """
    from trading.models import Agent, Position

    if not account.startswith(ACCOUNT_PREFIX) or not account[len(ACCOUNT_PREFIX):].isdigit():
        return {}
    agent = Agent.objects.filter(pk=int(account[len(ACCOUNT_PREFIX):])).first()
    if agent is None:
        return {}
    quotes = {paper_market(s).quote for s in agent.symbols if s in PAPER_MARKETS} or {"USDT"}
    quote = sorted(quotes)[0]
    cash = agent.capital
    funding: dict[str, Decimal] = {}
    for position in Position.objects.filter(agent=agent):
        cash += position.realized_pnl - position.quantity * position.average_price
        if position.quantity > 0 and position.symbol in PAPER_MARKETS:
            base = paper_market(position.symbol).base
            funding[base] = funding.get(base, ZERO) + position.quantity
    funding[quote] = max(cash, ZERO)
    return funding


class PaperGateway:
    exchange = "paper"
    # The venue's books are tables in TinyWindow's own database: a batch of sends can share
    # one transaction with the order bookkeeping (see orders_execute_batch).
    shares_database = True
    # Each agent trades its own account (`agent-<id>`): reconciliation compares an agent's
    # positions with its own account. A real exchange has one account, the API key's.
    per_agent_accounts = True

    def __init__(self, *, feed: Feed) -> None:
        self.venue = PaperVenue(feed=feed)
        # An agent's account is funded by the venue on its first order, when the venue finds none
        # of its balance rows (one check fewer per order than seeding before every send).
        self.venue.funding = paper_account_funding

    def __repr__(self) -> str:
        return f"PaperGateway(feed={self.venue.feed!r})"

    def _timed(self, endpoint: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = call()
            outcome = "ok"
            return result
        finally:
            metrics.API_LATENCY.labels(self.exchange, endpoint, outcome).observe(time.perf_counter() - started)
            api_call_record(exchange=self.exchange, ok=outcome == "ok")  # feeds the API error-rate breaker

    def market(self, symbol: str) -> Market:
        return paper_market(symbol)

    def submit_order(self, request: OrderRequest, *, new: bool = False) -> VenueOrderReport:
        """`new`: see PaperVenue.submit (the order services' local path, for a `pending` order it holds)."""
        report = self._timed("create_order", lambda: self.venue.submit(request, now=timezone.now(), new=new))
        refused = self._refused(report)
        if refused is not None:
            raise refused
        return report

    def submit_orders(self, requests: list[OrderRequest]) -> list[VenueOrderReport | PermanentExchangeError]:
        """Several new orders in one venue operation (`PaperVenue.submit_many`): for each, in order,
        the venue's report, or the error a real exchange would have answered (not raised: the
        others went through). One API call for the batch, like a batch endpoint."""
        reports = self._timed("create_order", lambda: self.venue.submit_many(requests, now=timezone.now()))
        return [self._refused(report) or report for report in reports]

    def _refused(self, report: VenueOrderReport) -> PermanentExchangeError | None:
        """What a real exchange answers with an error for an order the venue refused (the order
        services then reject the order); None for an accepted order."""
        if report.status != "rejected" or report.fills:
            return None
        funds = report.reject_code == REJECT_INSUFFICIENT_FUNDS
        exc, kind = (InsufficientFunds, "insufficient_funds") if funds else (InvalidOrder, "invalid_order")
        metrics.API_ERRORS.labels(self.exchange, "create_order", kind).inc()
        return exc(report.reject_reason or "refused by the paper venue")

    def fetch_order(self, client_order_id: str, symbol: str) -> VenueOrderReport | None:
        return self._timed("fetch_order", lambda: self.venue.fetch(client_order_id))

    def cancel_order(self, client_order_id: str, symbol: str) -> VenueOrderReport | None:
        return self._timed("cancel_order", lambda: self.venue.cancel(client_order_id))

    def fetch_orders(self, client_order_ids: list[str]) -> dict[str, VenueOrderReport | None]:
        """Bulk fetch (reconciliation): every order's report, None for one the venue does not know."""
        found = self._timed("fetch_orders", lambda: self.venue.fetch_many(client_order_ids))
        return {client_order_id: found.get(client_order_id) for client_order_id in client_order_ids}

    def cancel_orders(self, client_order_ids: list[str], symbol: str) -> dict[str, VenueOrderReport | None]:
        """Bulk cancel (the kill switch): one venue transaction for the whole batch."""
        from paper.services.bulk import venue_orders_cancel

        found = self._timed("cancel_orders", lambda: venue_orders_cancel(client_order_ids=client_order_ids))
        reports: dict[str, VenueOrderReport | None] = dict.fromkeys(client_order_ids)
        for venue_order in found:
            reports[venue_order.client_order_id] = self.venue.report(venue_order)
        return reports

    def record_realized_pnl(self, pnls: Mapping[str, Decimal]) -> None:
        self.venue.set_trade_pnl(pnls)

    def fetch_balances(self, account: str = "") -> dict[str, Decimal]:
        """The account's holdings by asset, free + locked (the gateway protocol's optional part)."""
        def read() -> dict[str, Decimal]:
            return {b.asset: b.free + b.locked for b in paper_balances(account=account or self.venue.account).values()}

        return self._timed("fetch_balance", read)

    def fetch_my_trades(self, symbol: str, since: datetime, account: str = "") -> list[VenueTrade]:
        """The account's paper trades in `symbol` since `since`, oldest first."""
        def read() -> list[VenueTrade]:
            rows = (PaperOrder.objects.filter(account=account or self.venue.account, symbol=symbol,
                                              created_at__gte=since).order_by("id"))
            return [
                VenueTrade(trade_id=t.trade_id, venue_order_id=f"P{t.venue_order_id}",
                           client_order_id=t.client_order_id, symbol=t.symbol, side=t.side, quantity=t.quantity,
                           price=t.price, fee=t.fee, fee_currency=t.fee_currency, executed_at=t.created_at)
                for t in rows
            ]

        return self._timed("fetch_my_trades", read)

    def match_open_orders(self, *, now: datetime | None = None) -> list[str]:
        """Run one matching pass of the venue (resting limits, partly filled orders)."""
        return self.venue.match_open_orders(now=now or timezone.now())

