"""The gateway protocol: how the order services talk to a venue, paper or real.

`PaperGateway` and `CcxtGateway` implement it; strategies and the order services cannot tell
them apart. Gateways raise only TinyWindow's `ExchangeError` subclasses.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Protocol

from tinywindow.exceptions import ExchangeError, TemporaryExchangeError


@dataclass(frozen=True)
class Market:
    """What a venue accepts for one symbol (ccxt's `market` structure, reduced)."""

    symbol: str
    base: str
    quote: str
    amount_step: Decimal
    price_step: Decimal
    min_amount: Decimal
    min_notional: Decimal

    def round_amount(self, amount: Decimal) -> Decimal:
        """Round down to the amount step: never order more than was decided."""
        return (amount / self.amount_step).to_integral_value(rounding=ROUND_DOWN) * self.amount_step

    def round_price(self, price: Decimal) -> Decimal:
        return (price / self.price_step).to_integral_value(rounding=ROUND_HALF_EVEN) * self.price_step


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    symbol: str
    side: str  # buy | sell
    order_type: str  # market | limit
    quantity: Decimal
    price: Decimal | None = None
    reduce_only: bool = False
    # The venue sub-account the order trades for (paper: one per agent, see `venue_account`).
    # Real exchanges ignore it: there the API key is the account.
    account: str = ""


@dataclass(frozen=True)
class VenueFill:
    trade_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: str  # maker | taker
    executed_at: datetime


@dataclass(frozen=True)
class VenueOrderReport:
    """What the venue knows about one order, with every fill it has made so far."""

    client_order_id: str
    venue_order_id: str
    status: str  # open | filled | cancelled | rejected
    filled_quantity: Decimal
    fills: tuple[VenueFill, ...] = field(default_factory=tuple)
    reject_reason: str = ""
    reject_code: str = ""  # insufficient_funds | invalid_order | "" (venue-specific refusals)


@dataclass(frozen=True)
class VenueTrade:
    """One trade of an account as the venue lists it (reconciliation's "check for unauthorized trades")."""

    trade_id: str
    venue_order_id: str
    client_order_id: str  # "" when the venue does not say (Binance's myTrades lists only its order id)
    symbol: str
    side: str  # buy | sell
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    executed_at: datetime


def venue_account(agent_id: int) -> str:
    """The paper venue account of one agent: each agent trades its own capital."""
    return f"agent-{agent_id}"


class Gateway(Protocol):
    exchange: str

    def market(self, symbol: str) -> Market: ...

    def submit_order(self, request: OrderRequest) -> VenueOrderReport:
        """Send an order. Idempotent by client_order_id: a re-send returns the existing order."""
        ...

    def fetch_order(self, client_order_id: str, symbol: str) -> VenueOrderReport | None: ...

    def cancel_order(self, client_order_id: str, symbol: str) -> VenueOrderReport | None: ...

    def record_realized_pnl(self, pnls: Mapping[str, Decimal]) -> None:
        """Let a venue that keeps per-trade PnL (the paper venue) store it (trade id -> PnL, the
        trades of one booking at once); others ignore it."""
        ...


class AccountReporting(Protocol):
    """The optional part of the gateway protocol that reconciliation uses (trading.services.reconcile).

    Both gateways implement it; call it through `gateway_fetch_balances` / `gateway_fetch_my_trades`,
    which answer None for a gateway without it. `account` is the paper venue's sub-account
    (`venue_account`); real exchanges ignore it: there the API key is the account.
    """

    def fetch_balances(self, account: str = "") -> dict[str, Decimal]:
        """What the account holds by asset: free + locked (held by open orders)."""
        ...

    def fetch_my_trades(self, symbol: str, since: datetime, account: str = "") -> list[VenueTrade]:
        """The account's trades in `symbol` executed at or after `since`, oldest first."""
        ...


def gateway_cancel_orders(gateway: Gateway, client_order_ids: list[str],
                          symbol: str) -> dict[str, VenueOrderReport | None]:
    """Cancel many orders of one symbol. Uses the gateway's bulk `cancel_orders` when it has
    one (the paper venue: one transaction for all), else cancels one by one."""
    bulk = getattr(gateway, "cancel_orders", None)
    if bulk is not None:
        return bulk(client_order_ids, symbol)
    return {cid: gateway.cancel_order(cid, symbol) for cid in client_order_ids}


def gateway_fetch_orders(gateway: Gateway, orders: Sequence[tuple[str, str]]
                         ) -> Iterator[tuple[str, VenueOrderReport | None | ExchangeError]]:
    """What the venue says of each (client_order_id, symbol), in order: its report, None when it
    does not know the order, or the ExchangeError that asking about this one order raised (a
    symbol gone from the venue...). A TemporaryExchangeError — the venue is not answering — is
    raised: no point asking it about every other order. Uses the gateway's bulk `fetch_orders`
    when it has one (the paper venue: two statements for all), else asks one by one."""
    bulk = getattr(gateway, "fetch_orders", None)
    if bulk is not None:
        found = bulk([client_order_id for client_order_id, _ in orders])
        yield from ((client_order_id, found[client_order_id]) for client_order_id, _ in orders)
        return
    for client_order_id, symbol in orders:
        try:
            yield client_order_id, gateway.fetch_order(client_order_id, symbol)
        except TemporaryExchangeError:
            raise
        except ExchangeError as exc:
            yield client_order_id, exc


def gateway_fetch_balances(gateway: Gateway, account: str = "") -> dict[str, Decimal] | None:
    """The account's holdings by asset, or None when the gateway cannot report balances."""
    fetch = getattr(gateway, "fetch_balances", None)
    return fetch(account) if fetch is not None else None


def gateway_fetch_my_trades(gateway: Gateway, symbol: str, since: datetime,
                            account: str = "") -> list[VenueTrade] | None:
    """The account's trades in `symbol` since `since`, or None when the gateway cannot list them."""
    fetch = getattr(gateway, "fetch_my_trades", None)
    return fetch(symbol, since, account) if fetch is not None else None
