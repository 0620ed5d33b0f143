"""CcxtGateway: the gateway protocol over a real exchange, through ccxt. The ONLY module importing ccxt.

- ccxt errors become TinyWindow errors in exactly one place, `exchange_error_from_ccxt`
  (network trouble, rate limits, timeouts, venue down → `TemporaryExchangeError`, which the
  `execute_order` task retries with bounded backoff; refusals → `InvalidOrder`,
  `InsufficientFunds`, `ExchangeAuthError`: the order is rejected with the venue's reason).
- Idempotent by `client_order_id`: it goes with the order (`newClientOrderId` on Binance), and
  the order service asks `fetch_order(client_order_id)` before re-sending an order a crashed
  delivery left `submitted`. A venue answering "duplicate" gets the same treatment.
- ccxt's rate limiter is on; `rateLimit` from EXCHANGE_RATE_LIMIT_MS, timeout from EXCHANGE_TIMEOUT_MS.
- Every call is timed into `tinywindow_api_latency_seconds{exchange,endpoint,outcome}`; errors
  count in `tinywindow_api_errors_total{exchange,endpoint,kind}` and in the API error-rate
  breaker's counters, and each one asks for that breaker to be checked at once (throttled).
- A rate-limit answer's Retry-After travels on the TemporaryExchangeError (`retry_after`): the
  `execute_order` task never retries sooner.
- Credentials come from the environment or Vault only, never from the database; they are
  never logged and never in the repr/str of the gateway.
- EXCHANGE_API_URL points the exchange's API at another base URL: the local exchange
  (`manage.py exchange_server`) on 127.0.0.1, which paper mode allows (see `ccxt_gateway_for`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import ccxt
from django.conf import settings

from safety.services.breakers import breakers_check_soon
from safety.services.stats import api_call_record
from tinywindow import metrics
from tinywindow.exceptions import (
    ConfigurationError,
    ExchangeAuthError,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    PermanentExchangeError,
    TemporaryExchangeError,
)
from tinywindow.logs import register_secret
from trading.gateways.base import Market, OrderRequest, VenueFill, VenueOrderReport, VenueTrade

logger = logging.getLogger(__name__)
T = TypeVar("T")

# ccxt unified order statuses → the gateway protocol's.
STATUS_FROM_CCXT = {"open": "open", "closed": "filled", "canceled": "cancelled", "expired": "cancelled",
                    "rejected": "rejected"}
# The exchange's own name for the client order id on order entry (ccxt accepts `clientOrderId` too).
CLIENT_ORDER_ID_PARAM = {"binance": "newClientOrderId"}
DEFAULT_STEP = Decimal("0.00000001")
# fetch_my_trades paging: Binance serves at most 1,000 trades a request.
MY_TRADES_PAGE_SIZE = 1000
MY_TRADES_MAX_PAGES = 10


class VenueOrderNotFound(InvalidOrder):
    """The venue does not know this order (fetch/cancel): the gateway answers None."""


class DuplicateClientOrderId(InvalidOrder):
    """The venue already holds an order with this client id: the gateway returns that order."""


def exchange_error_from_ccxt(exc: ccxt.BaseError) -> tuple[ExchangeError, str]:
    """THE mapping of ccxt's exceptions to TinyWindow's, with a short kind for the metrics.

    Order matters: ccxt's tree nests OrderNotFound and DuplicateOrderId under InvalidOrder.
    """
    message = str(exc)
    if isinstance(exc, ccxt.InsufficientFunds):
        return InsufficientFunds(message), "insufficient_funds"
    if isinstance(exc, ccxt.OrderNotFound):
        return VenueOrderNotFound(message), "not_found"
    if isinstance(exc, ccxt.DuplicateOrderId) or "Duplicate order sent" in message:
        # Binance answers a duplicate newClientOrderId with -2010, which ccxt files under InvalidOrder.
        return DuplicateClientOrderId(message), "duplicate"
    if isinstance(exc, ccxt.AuthenticationError):
        return ExchangeAuthError(message), "auth"
    if isinstance(exc, ccxt.InvalidOrder | ccxt.BadRequest):  # BadSymbol is a BadRequest
        return InvalidOrder(message), "invalid_order"
    if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return TemporaryExchangeError(message), "rate_limit"
    if isinstance(exc, ccxt.RequestTimeout):
        return TemporaryExchangeError(message), "timeout"
    if isinstance(exc, ccxt.ExchangeNotAvailable):
        return TemporaryExchangeError(message), "unavailable"
    if isinstance(exc, ccxt.OperationFailed):  # NetworkError and the rest of "try again later"
        return TemporaryExchangeError(message), "network"
    return PermanentExchangeError(message), "other"


# --- credentials --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExchangeCredentials:
    api_key: str = field(repr=False)
    secret: str = field(repr=False)
    source: str = "environment"

    def fingerprint(self) -> str:
        """Tells two credentials apart (cache keys) without holding either in clear."""
        return hashlib.sha256(f"{self.api_key}\0{self.secret}".encode()).hexdigest()[:16]


def exchange_credentials_load() -> ExchangeCredentials | None:
    """EXCHANGE_API_KEY/EXCHANGE_API_SECRET, else Vault (VAULT_ADDR, VAULT_TOKEN, VAULT_SECRET_PATH), else None."""
    key, secret = os.environ.get("EXCHANGE_API_KEY", ""), os.environ.get("EXCHANGE_API_SECRET", "")
    if key and secret:
        return ExchangeCredentials(key, secret, "environment")
    if key or secret:
        raise ConfigurationError("set both EXCHANGE_API_KEY and EXCHANGE_API_SECRET (one of them is empty)")
    if os.environ.get("VAULT_ADDR") and os.environ.get("VAULT_SECRET_PATH"):
        return _credentials_from_vault()
    return None


_vault_cache: dict[tuple[str, str, str], ExchangeCredentials] = {}


def _credentials_from_vault() -> ExchangeCredentials:
    """Read once per (address, path, token) and process: gateways are built on every order."""
    import hvac

    addr, path = os.environ["VAULT_ADDR"], os.environ["VAULT_SECRET_PATH"]
    cache_key = (addr, path, hashlib.sha256(os.environ.get("VAULT_TOKEN", "").encode()).hexdigest())
    if cache_key in _vault_cache:
        return _vault_cache[cache_key]
    try:
        client = hvac.Client(url=addr, token=os.environ.get("VAULT_TOKEN", ""),
                             timeout=max(1, settings.EXCHANGE_TIMEOUT_MS // 1000))
        response = client.read(path.strip("/"))
    except Exception as exc:  # hvac raises many kinds; none may carry the token into our logs
        raise ConfigurationError(f"cannot read exchange credentials from Vault ({addr}, {path}): "
                                 f"{type(exc).__name__}") from None
    data = (response or {}).get("data") or {}
    if isinstance(data.get("data"), dict):  # KV version 2 wraps the secret once more
        data = data["data"]
    key = data.get("api_key") or data.get("apiKey") or ""
    secret = data.get("api_secret") or data.get("secret") or ""
    if not key or not secret:
        raise ConfigurationError(f"Vault secret {path} has no api_key/api_secret fields")
    credentials = _vault_cache[cache_key] = ExchangeCredentials(str(key), str(secret), "vault")
    register_secret(credentials.api_key)  # masked in every log line of this process
    register_secret(credentials.secret)
    return credentials


# --- the local exchange --------------------------------------------------------------------------
def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exchange_urls_rewrite(client: ccxt.Exchange, base_url: str) -> None:
    """Send every API call of a ccxt exchange to `base_url`, keeping each endpoint's path.

    For Binance, `https://api.binance.com/api/v3` becomes `http://127.0.0.1:PORT/api/v3`. All
    origins are replaced (fapi, sapi... too), so nothing this exchange object does can leave
    for the real venue.
    """
    target = urlsplit(base_url.rstrip("/"))

    def rewrite(value: Any) -> Any:
        if isinstance(value, str) and "://" in value:
            parts = urlsplit(value)
            return urlunsplit((target.scheme, target.netloc, target.path + parts.path, parts.query, parts.fragment))
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        return value

    client.urls["api"] = rewrite(client.urls["api"])


# --- the gateway ---------------------------------------------------------------------------------
def _dec(value: Any) -> Decimal:
    """ccxt numbers (floats, strings, None) as Decimal, through their shortest string form."""
    if value is None or value == "":
        return Decimal(0)
    return Decimal(str(value))


class CcxtGateway:
    def __init__(self, exchange: str, *, credentials: ExchangeCredentials | None, api_url: str = "",
                 rate_limit_ms: int | None = None, timeout_ms: int = 10000) -> None:
        klass = getattr(ccxt, exchange, None) if exchange in ccxt.exchanges else None
        if klass is None:
            raise ConfigurationError(f"unknown exchange {exchange!r}: use 'paper' or a ccxt exchange id")
        self.exchange = exchange
        self.api_url = api_url
        self.authenticated = credentials is not None
        config: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": timeout_ms,
            # Spot only: no futures/options/margin markets to load, no currency endpoint (it needs keys).
            "options": {"defaultType": "spot", "fetchCurrencies": False, "fetchMargins": False,
                        "fetchMarkets": {"types": ["spot"]}},
        }
        if rate_limit_ms is not None:
            config["rateLimit"] = rate_limit_ms
        if credentials is not None:
            config["apiKey"], config["secret"] = credentials.api_key, credentials.secret
        self._client = klass(config)
        if api_url:
            exchange_urls_rewrite(self._client, api_url)
        self._markets_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"CcxtGateway(exchange={self.exchange!r}, api_url={self.api_url or 'default'!r}, "
                f"authenticated={self.authenticated})")

    __str__ = __repr__

    # --- plumbing -----------------------------------------------------------------------------
    def _call(self, endpoint: str, call: Callable[[], T]) -> T:
        """Run one ccxt call: timed, counted, and its errors mapped (raise ... from the ccxt error)."""
        started = time.perf_counter()
        outcome = "error"
        api_healthy = False
        try:
            result = call()
            outcome, api_healthy = "ok", True
            return result
        except ccxt.BaseError as exc:
            mapped, kind = exchange_error_from_ccxt(exc)
            if isinstance(mapped, VenueOrderNotFound):
                outcome = "ok"  # the venue answered: it does not have that order
            else:
                metrics.API_ERRORS.labels(self.exchange, endpoint, kind).inc()
                logger.warning("%s %s failed (%s): %s", self.exchange, endpoint, kind, exc)
            # A refused order is the venue working as it should: only trouble talking to it
            # (network, rate limit, outage, credentials) feeds the API error-rate breaker.
            api_healthy = isinstance(mapped, InvalidOrder | InsufficientFunds)
            if kind == "rate_limit":
                mapped.retry_after = self._retry_after()
            raise mapped from exc
        finally:
            metrics.API_LATENCY.labels(self.exchange, endpoint, outcome).observe(time.perf_counter() - started)
            api_call_record(exchange=self.exchange, ok=api_healthy)
            if not api_healthy:
                breakers_check_soon(["api_error_rate"])  # not only at the next periodic check

    def _retry_after(self) -> float | None:
        """The Retry-After (seconds) of the answer that just failed, when the venue sent one."""
        headers = self._client.last_response_headers or {}
        try:
            value = float(headers.get("Retry-After") or headers.get("retry-after") or "")
        except (TypeError, ValueError):
            return None  # absent, or an HTTP date: the task's own backoff applies
        return value if value >= 0 else None

    def _markets(self) -> dict[str, dict]:
        if self._client.markets:  # loaded once per gateway; ccxt keeps them
            return self._client.markets
        with self._markets_lock:
            return self._call("load_markets", self._client.load_markets)

    def _step(self, precision: Any) -> Decimal:
        if precision is None:
            return DEFAULT_STEP
        mode = self._client.precisionMode
        if mode == ccxt.TICK_SIZE:  # Binance and most others: precision IS the step
            return _dec(precision)
        if mode == ccxt.DECIMAL_PLACES:
            return Decimal(1).scaleb(-int(precision))
        # SIGNIFICANT_DIGITS has no fixed step; the venue rounds, we only must not over-specify.
        return DEFAULT_STEP

    def _client_id_params(self, client_order_id: str, *, entry: bool) -> dict[str, str]:
        name = CLIENT_ORDER_ID_PARAM.get(self.exchange, "clientOrderId") if entry else "clientOrderId"
        return {name: client_order_id}

    # --- the protocol -------------------------------------------------------------------------
    def market(self, symbol: str) -> Market:
        market = self._markets().get(symbol)
        if market is None:
            raise InvalidOrder(f"unknown symbol {symbol!r} on {self.exchange}")
        precision, limits = market.get("precision") or {}, market.get("limits") or {}
        amount_step, price_step = self._step(precision.get("amount")), self._step(precision.get("price"))
        return Market(
            symbol=symbol, base=market["base"], quote=market["quote"], amount_step=amount_step, price_step=price_step,
            min_amount=_dec((limits.get("amount") or {}).get("min")) or amount_step,
            min_notional=_dec((limits.get("cost") or {}).get("min")),
        )

    def submit_order(self, request: OrderRequest) -> VenueOrderReport:
        price = float(request.price) if request.order_type == "limit" and request.price is not None else None
        params = self._client_id_params(request.client_order_id, entry=True)
        try:
            order = self._call("create_order", lambda: self._client.create_order(
                request.symbol, request.order_type, request.side, float(request.quantity), price, params))
        except DuplicateClientOrderId:
            existing = self.fetch_order(request.client_order_id, request.symbol)
            if existing is None:
                raise
            return existing
        return self._report(order, request.symbol, request.client_order_id)

    def fetch_order(self, client_order_id: str, symbol: str) -> VenueOrderReport | None:
        params = self._client_id_params(client_order_id, entry=False)
        try:
            order = self._call("fetch_order", lambda: self._client.fetch_order(None, symbol, params))
        except VenueOrderNotFound:
            return None
        return self._report(order, symbol, client_order_id)

    def cancel_order(self, client_order_id: str, symbol: str) -> VenueOrderReport | None:
        params = self._client_id_params(client_order_id, entry=False)
        try:
            order = self._call("cancel_order", lambda: self._client.cancel_order(None, symbol, params))
        except VenueOrderNotFound:
            # Unknown to cancel: already filled (or never there). The venue's record says which.
            return self.fetch_order(client_order_id, symbol)
        return self._report(order, symbol, client_order_id)

    def record_realized_pnl(self, pnls: Mapping[str, Decimal]) -> None:
        """A real exchange keeps no PnL of ours."""

    # --- account (reconciliation; the protocol's optional part) ----------------------------------
    def fetch_balances(self, account: str = "") -> dict[str, Decimal]:
        """What the exchange account holds by asset (ccxt's `total`: free + used). `account` is
        ignored: the API key is the account."""
        balance = self._call("fetch_balance", self._client.fetch_balance)
        return {asset: _dec(amount) for asset, amount in (balance.get("total") or {}).items() if amount is not None}

    def fetch_my_trades(self, symbol: str, since: datetime, account: str = "") -> list[VenueTrade]:
        """The account's trades in `symbol` since `since`, oldest first, page by page.

        Each page starts at the newest timestamp of the previous one (not one past it: two
        trades can share a millisecond), duplicates dropped by trade id. Bounded: beyond
        MY_TRADES_MAX_PAGES pages the rest waits for a later run, with a warning.
        """
        start_ms = int(since.timestamp() * 1000)
        trades: dict[str, VenueTrade] = {}
        for _ in range(MY_TRADES_MAX_PAGES):
            page = self._call("fetch_my_trades", lambda start=start_ms: self._client.fetch_my_trades(
                symbol, start, MY_TRADES_PAGE_SIZE))
            before = len(trades)
            for trade in page:
                if trade.get("id") and str(trade["id"]) not in trades:
                    trades[str(trade["id"])] = self._venue_trade(trade, symbol)
            if len(page) < MY_TRADES_PAGE_SIZE or len(trades) == before:
                break
            start_ms = max(int(t.get("timestamp") or start_ms) for t in page)
        else:
            logger.warning("%s %s: more than %s trades since %s; the newest are checked on a later run",
                           self.exchange, symbol, len(trades), since.isoformat())
        return sorted(trades.values(), key=lambda t: (t.executed_at, t.trade_id))

    def _venue_trade(self, trade: dict, symbol: str) -> VenueTrade:
        fee = trade.get("fee") or {}
        stamp = trade.get("timestamp")
        info = trade.get("info") or {}
        return VenueTrade(
            trade_id=str(trade["id"]), venue_order_id=str(trade.get("order") or ""),
            client_order_id=str(trade.get("clientOrderId") or info.get("clientOrderId") or ""),
            symbol=trade.get("symbol") or symbol, side=trade.get("side") or "", quantity=_dec(trade.get("amount")),
            price=_dec(trade.get("price")), fee=_dec(fee.get("cost")), fee_currency=fee.get("currency") or "",
            executed_at=datetime.fromtimestamp(stamp / 1000, tz=UTC) if stamp else datetime.now(tz=UTC),
        )

    # --- reports ------------------------------------------------------------------------------
    def _report(self, order: dict, symbol: str, client_order_id: str) -> VenueOrderReport:
        market = self.market(symbol)
        filled = _dec(order.get("filled"))
        fills = self._fills(order.get("trades") or [], order, market)
        if filled > sum((f.quantity for f in fills), Decimal(0)) and order.get("id"):
            # The order answer does not list every trade (Binance's GET /order lists none): ask for them.
            trades = self._call("fetch_order_trades", lambda: self._order_trades(order["id"], symbol))
            fills = self._fills(trades, order, market)
        status = STATUS_FROM_CCXT.get(order.get("status") or "open", "open")
        return VenueOrderReport(
            client_order_id=order.get("clientOrderId") or client_order_id, venue_order_id=str(order.get("id") or ""),
            status=status, filled_quantity=filled, fills=tuple(fills),
            reject_reason="rejected by the exchange" if status == "rejected" else "",
        )

    def _order_trades(self, order_id: str, symbol: str) -> list[dict]:
        if self._client.has.get("fetchOrderTrades"):
            return self._client.fetch_order_trades(order_id, symbol)
        return [t for t in self._client.fetch_my_trades(symbol) if str(t.get("order")) == str(order_id)]

    @staticmethod
    def _fills(trades: list[dict], order: dict, market: Market) -> list[VenueFill]:
        fills = []
        for trade in trades:
            if not trade.get("id"):
                continue
            price, quantity = _dec(trade.get("price")), _dec(trade.get("amount"))
            fee = trade.get("fee") or {}
            fee_cost, fee_currency = _dec(fee.get("cost")), fee.get("currency") or market.quote
            if fee_currency == market.base:
                # Positions are kept in quote money: a fee taken in base is worth fee × price.
                fee_cost, fee_currency = fee_cost * price, market.quote
            stamp = trade.get("timestamp") or order.get("lastTradeTimestamp") or order.get("timestamp")
            executed_at = datetime.fromtimestamp(stamp / 1000, tz=UTC) if stamp else datetime.now(tz=UTC)
            fills.append(VenueFill(
                trade_id=str(trade["id"]), quantity=quantity, price=price, fee=fee_cost, fee_currency=fee_currency,
                liquidity=trade.get("takerOrMaker") or "taker", executed_at=executed_at,
            ))
        return fills


# --- construction ----------------------------------------------------------------------------------
_gateways: dict[tuple, CcxtGateway] = {}
_gateways_lock = threading.Lock()


def ccxt_exchange_known(exchange: str) -> bool:
    """True for a ccxt exchange id (`binance`, `kraken`, ...)."""
    return exchange in ccxt.exchanges


def ccxt_gateway_for(exchange: str) -> CcxtGateway:
    """The gateway for a ccxt exchange id, refusing live trading unless it is explicitly enabled.

    Paper mode (PAPER_TRADING_MODE=true, the default) allows only the local exchange
    (EXCHANGE_API_URL on a loopback address). Live trading needs PAPER_TRADING_MODE=false and
    credentials. One gateway per configuration per process, so ccxt's market cache and rate
    limiter are shared by every order of that process.
    """
    api_url = settings.EXCHANGE_API_URL
    if exchange not in ccxt.exchanges:
        raise ConfigurationError(f"unknown exchange {exchange!r}: use 'paper' or a ccxt exchange id")
    if settings.PAPER_TRADING_MODE and not (api_url and is_loopback_url(api_url)):
        raise ConfigurationError(
            f"live trading on {exchange!r} refused: PAPER_TRADING_MODE is true. Trade on the 'paper' venue, point "
            f"EXCHANGE_API_URL at the local exchange (http://127.0.0.1:PORT, `python manage.py exchange_server`), "
            f"or set PAPER_TRADING_MODE=false with EXCHANGE_API_KEY/EXCHANGE_API_SECRET (or Vault)"
        )
    credentials = exchange_credentials_load()
    if credentials is None:
        raise ConfigurationError(
            f"exchange {exchange!r} needs credentials: set EXCHANGE_API_KEY and EXCHANGE_API_SECRET, "
            f"or VAULT_ADDR, VAULT_TOKEN and VAULT_SECRET_PATH"
        )
    key = (exchange, api_url, settings.EXCHANGE_RATE_LIMIT_MS, settings.EXCHANGE_TIMEOUT_MS, credentials.fingerprint())
    with _gateways_lock:
        gateway = _gateways.get(key)
        if gateway is None:
            gateway = CcxtGateway(exchange, credentials=credentials, api_url=api_url,
                                  rate_limit_ms=settings.EXCHANGE_RATE_LIMIT_MS,
                                  timeout_ms=settings.EXCHANGE_TIMEOUT_MS)
            _gateways[key] = gateway
            logger.info("gateway ready: %r (credentials from %s)", gateway, credentials.source)
        return gateway


def ccxt_gateways_clear() -> None:
    """Forget built gateways and cached Vault credentials (tests, or after rotating keys)."""
    with _gateways_lock:
        _gateways.clear()
        _vault_cache.clear()


# --- market data (public endpoints), for trading.feeds.ccxt_feed and `manage.py download_candles` ---
# Kept apart from order entry: no credentials, so it can read a real venue's candles in paper
# mode too (nothing it holds can trade). It follows EXCHANGE_API_URL like the gateway, so tests
# and demos read the local exchange's klines.
_market_data_gateways: dict[tuple, CcxtGateway] = {}


def market_data_gateway_for(exchange: str) -> CcxtGateway:
    """An unauthenticated gateway for public market data, one per configuration per process."""
    key = (exchange, settings.EXCHANGE_API_URL, settings.EXCHANGE_RATE_LIMIT_MS, settings.EXCHANGE_TIMEOUT_MS)
    with _gateways_lock:
        gateway = _market_data_gateways.get(key)
        if gateway is None:
            gateway = CcxtGateway(exchange, credentials=None, api_url=settings.EXCHANGE_API_URL,
                                  rate_limit_ms=settings.EXCHANGE_RATE_LIMIT_MS,
                                  timeout_ms=settings.EXCHANGE_TIMEOUT_MS)
            _market_data_gateways[key] = gateway
        return gateway


def fetch_ohlcv(exchange: str, symbol: str, timeframe: str, *, since: datetime, limit: int) -> list:
    """Up to `limit` candles of `symbol` opening at or after `since`, oldest first, as
    `trading.feeds.base.Candle` (Decimal prices). The venue's last candle may still be forming:
    callers keep only closed ones. Raises TinyWindow errors only: TemporaryExchangeError when the
    venue cannot be reached, InvalidOrder for an unknown symbol, ValidationError for a timeframe
    the venue does not serve.
    """
    from datetime import timedelta

    from tinywindow.exceptions import ValidationError
    from trading.feeds.base import EPOCH, Candle, epoch_seconds

    gateway = market_data_gateway_for(exchange)
    client = gateway._client
    if client.timeframes and timeframe not in client.timeframes:
        raise ValidationError(f"{exchange} has no {timeframe} candles; it serves {', '.join(client.timeframes)}",
                              field="timeframe")
    since_ms = epoch_seconds(since) * 1000
    rows = gateway._call("fetch_ohlcv", lambda: client.fetch_ohlcv(symbol, timeframe, since=since_ms, limit=limit))
    return [
        Candle(ts=EPOCH + timedelta(milliseconds=int(row[0])), open=_dec(row[1]), high=_dec(row[2]), low=_dec(row[3]),
               close=_dec(row[4]), volume=_dec(row[5]))
        for row in rows
    ]
