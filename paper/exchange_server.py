"""The local exchange: the paper venue served over HTTP in the dialect of Binance's spot REST API.

`CcxtGateway` talks to it with ccxt's own `binance` class (EXCHANGE_API_URL=http://127.0.0.1:PORT),
so the whole live path — ccxt, request signing, rate limiter, error mapping, retries — runs
against a venue on this machine, in tests and demos, with no network and no real money.

Served (the subset ccxt's `binance` uses for spot trading, same paths, fields and error JSON):

    GET    /api/v3/ping, /api/v3/time, /api/v3/exchangeInfo            public
    GET    /api/v3/ticker/price, /api/v3/ticker/24hr, /api/v3/klines     public (synthetic feed)
    GET    /api/v3/account                                              signed: balances
    POST   /api/v3/order   GET /api/v3/order   DELETE /api/v3/order     signed: newClientOrderId / origClientOrderId
    GET    /api/v3/openOrders, /api/v3/myTrades                         signed

Signed endpoints check X-MBX-APIKEY and the HMAC-SHA256 `signature` over the other
parameters, and the `timestamp` against `recvWindow`, answering Binance's error JSON
(`{"code": -1022, "msg": "Signature for this request is not valid."}`...).

Faults for tests, scripted per request (Python API `exchange.faults.add(Fault(...))`, or HTTP
`POST /_faults {"mode": "429", "count": 2, "retry_after": 1, "path": "/api/v3/order"}`,
`DELETE /_faults` clears). For tests that run the exchange as its own process, `GET /_requests`
lists the requests served (method, path, status, fault, client order id, time) and
`POST /_match` runs one matching pass (with `--match-seconds 0`, the test decides when):

    429 / 418          rate limited: Binance's -1003 JSON with Retry-After   → ccxt DDoSProtection
    500 / 502 / 503    server error page                                    → ccxt ExchangeNotAvailable
    timeout            answer after `delay_ms` (default 3 s); `when`: "before" (not processed)
                       or "after" (processed, the answer arrives too late)   → ccxt RequestTimeout
    latency_ms         answer normally, `latency_ms` later
    reject             POST /api/v3/order refused: -2010 NEW_ORDER_REJECTED    → ccxt InvalidOrder

Run it as its own process (`python manage.py exchange_server --port 8765`) or in a thread
(`LocalExchange(...).serve(port=0)`) for tests. It binds loopback addresses only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qsl
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.db import close_old_connections, connections
from django.utils import timezone

from paper.markets import PAPER_MARKETS
from paper.models import PaperOrder, PaperVenueOrder
from paper.services.balances import paper_account_seed, paper_balances
from paper.venue import REJECT_INSUFFICIENT_FUNDS, PaperVenue
from trading.feeds.base import TIMEFRAME_SECONDS, Feed
from trading.gateways.base import Market, OrderRequest

logger = logging.getLogger(__name__)

RECV_WINDOW_MS = 5000
EIGHT_PLACES = Decimal("0.00000001")
FAULT_MODES = ("429", "418", "500", "502", "503", "timeout", "latency_ms", "reject")

ERR_SIGNATURE = (400, -1022, "Signature for this request is not valid.")
ERR_API_KEY_FORMAT = (401, -2014, "API-key format invalid.")
ERR_API_KEY = (401, -2015, "Invalid API-key, IP, or permissions for action.")
ERR_TIMESTAMP = (400, -1021, "Timestamp for this request is outside of the recvWindow.")
ERR_SYMBOL = (400, -1121, "Invalid symbol.")
ERR_NO_ORDER = (400, -2013, "Order does not exist.")
ERR_CANCEL_UNKNOWN = (400, -2011, "Unknown order sent.")
ERR_DUPLICATE = (400, -2010, "Duplicate order sent.")
ERR_BALANCE = (400, -2010, "Account has insufficient balance for requested action.")
ERR_RATE = (429, -1003, "Too many requests; current limit of IP(127.0.0.1) request weight per minute is 6000.")

BINANCE_STATUS = {
    PaperVenueOrder.Status.FILLED: "FILLED",
    PaperVenueOrder.Status.CANCELLED: "CANCELED",
    PaperVenueOrder.Status.REJECTED: "REJECTED",
}


class ApiError(Exception):
    """An answer in Binance's error format: HTTP status and {"code": ..., "msg": ...}."""

    def __init__(self, spec: tuple[int, int, str], msg: str | None = None) -> None:
        self.status, self.code, default = spec
        self.msg = msg or default
        super().__init__(self.msg)


@dataclass
class Fault:
    mode: str
    count: int | None = 1  # how many matching requests it hits; None: until cleared
    path: str = ""  # only requests whose path starts with this ("" = every API request)
    method: str = ""  # only this HTTP method ("" = any)
    retry_after: int = 1  # seconds, for 429/418
    latency_ms: int = 0  # for latency_ms
    delay_ms: int = 3000  # for timeout: longer than the client's timeout
    when: str = "before"  # for timeout: "before" or "after" the request is processed

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; use one of {', '.join(FAULT_MODES)}")
        if self.when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")

    def matches(self, method: str, path: str) -> bool:
        if self.mode == "reject" and not (method == "POST" and path == "/api/v3/order"):
            return False
        return path.startswith(self.path or "/api/") and (not self.method or self.method.upper() == method)


class FaultInjector:
    """Scripted faults, consumed in order by the requests they match. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count <= 0:
                            self._faults.remove(fault)
                    return fault
        return None


@dataclass(frozen=True)
class ApiKey:
    secret: str = field(repr=False)
    account: str


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    status: int
    fault: str = ""
    client_order_id: str = ""  # newClientOrderId / origClientOrderId of order requests
    at: float = 0.0  # when the request arrived (time.time()): tests check Retry-After was honoured


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _fmt(value: Decimal | None) -> str:
    """Binance's number strings: 8 decimals, more only when the value has more."""
    if value is None:
        return "0.00000000"
    quantized = value.quantize(EIGHT_PLACES)
    return format(quantized if quantized == value else value.normalize(), "f")


def _market_id(market: Market) -> str:
    return f"{market.base}{market.quote}"


MARKETS_BY_ID: dict[str, Market] = {_market_id(m): m for m in PAPER_MARKETS.values()}


class LocalExchange:
    """The WSGI application (and its thread server) of the local exchange."""

    def __init__(self, *, feed: Feed | None = None, venue: PaperVenue | None = None) -> None:
        if venue is None:
            if feed is None:
                from django.conf import settings

                from trading.feeds import feed_for

                feed = feed_for(settings.PAPER_FEED)  # the same market as the in-process paper venue
            venue = PaperVenue(feed=feed)
        self.venue = venue
        self.feed = venue.feed
        self.faults = FaultInjector()
        self._keys: dict[str, ApiKey] = {}
        self._log: list[LoggedRequest] = []
        self._log_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalExchange(accounts={sorted(k.account for k in self._keys.values())})"

    # --- setup ----------------------------------------------------------------------------
    def add_api_key(self, *, api_key: str, secret: str, account: str,
                    balances: dict[str, Decimal] | None = None) -> None:
        """Let `api_key` trade `account`; fund the account once (`balances`) if it is new."""
        if not api_key or not secret:
            raise ValueError("an API key and its secret are required")
        self._keys[api_key] = ApiKey(secret=secret, account=account)
        paper_account_seed(account=account, balances=balances or {})

    def requests(self, *, method: str = "", path: str = "", client_order_id: str = "") -> list[LoggedRequest]:
        """Requests served so far (tests count order submissions with it)."""
        with self._log_lock:
            return [r for r in self._log if (not method or r.method == method) and (not path or r.path == path)
                    and (not client_order_id or r.client_order_id == client_order_id)]

    def match(self, *, now: datetime | None = None) -> list[str]:
        """One matching pass of the venue (what `--match-seconds` runs in the server process)."""
        return self.venue.match_open_orders(now=now or timezone.now())

    # --- WSGI -----------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"].upper()
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length).decode() if length else ""
        arrived = time.time()
        status, payload, headers, fault = self._respond(method, path, query, body, environ)
        if not path.startswith("/_"):  # the test's own control calls are not venue traffic
            params = dict(parse_qsl(query)) | dict(parse_qsl(body))
            client_order_id = params.get("newClientOrderId") or params.get("origClientOrderId") or ""
            with self._log_lock:
                self._log.append(LoggedRequest(method, path, status, fault.mode if fault else "", client_order_id,
                                               arrived))
        if fault is not None and fault.mode == "timeout" and fault.when == "after":
            time.sleep(fault.delay_ms / 1000)  # processed, but the answer arrives after the client gave up
        if isinstance(payload, str):
            data, content_type = payload.encode(), "text/html"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json;charset=UTF-8"
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 418: "I'm a teapot",
                  429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                  503: "Service Unavailable"}.get(status, "Error")
        start_response(f"{status} {reason}", [("Content-Type", content_type), ("Content-Length", str(len(data))),
                                              *headers])
        return [data]

    def _respond(self, method: str, path: str, query: str, body: str,
                 environ: dict) -> tuple[int, Any, list[tuple[str, str]], Fault | None]:
        if path == "/_faults":
            return (*self._control(method, body), [], None)
        if path == "/_requests" and method == "GET":
            with self._log_lock:
                return 200, {"requests": [asdict(r) for r in self._log]}, [], None
        if path == "/_match" and method == "POST":
            try:
                return 200, {"traded": self.match()}, [], None
            finally:
                connections.close_all()
        fault = self.faults.take(method, path)
        if fault is not None:
            logger.info("local exchange: fault %s on %s %s", fault.mode, method, path)
            if fault.mode in ("429", "418"):
                _, code, msg = ERR_RATE
                headers = [("Retry-After", str(fault.retry_after))]
                return int(fault.mode), {"code": code, "msg": msg}, headers, fault
            if fault.mode in ("500", "502", "503"):
                page = f"<html><body><h1>{fault.mode}</h1>local exchange fault</body></html>"
                return int(fault.mode), page, [], fault
            if fault.mode == "reject":
                rejected = {"code": -2010, "msg": "Order rejected by the local exchange (fault injection)."}
                return 400, rejected, [], fault
            if fault.mode == "latency_ms":
                time.sleep(fault.latency_ms / 1000)
            if fault.mode == "timeout" and fault.when == "before":
                time.sleep(fault.delay_ms / 1000)  # the client has given up by now; nothing was processed
                return 503, "<html><body>too late</body></html>", [], fault
        status, payload = self._dispatch(method, path, query, body, environ)
        return status, payload, [], fault

    def _dispatch(self, method: str, path: str, query: str, body: str, environ: dict) -> tuple[int, Any]:
        close_old_connections()
        try:
            route = ROUTES.get((method, path))
            if route is None:
                return 404, "<html><body><h1>404 Not Found</h1></body></html>"
            handler, signed = route
            params = dict(parse_qsl(query, keep_blank_values=True))
            params.update(parse_qsl(body, keep_blank_values=True))
            account = self._authenticate(environ, query, body, params) if signed else ""
            return 200, handler(self, params, account)
        except ApiError as exc:
            return exc.status, {"code": exc.code, "msg": exc.msg}
        except Exception:
            logger.exception("local exchange: %s %s failed", method, path)
            return 500, {"code": -1000, "msg": "An unknown error occurred while processing the request."}
        finally:
            # Each request runs in its own thread: give its database connection back now.
            connections.close_all()

    def _control(self, method: str, body: str) -> tuple[int, Any]:
        try:
            if method == "POST":
                self.faults.add(Fault(**json.loads(body or "{}")))
            elif method == "DELETE":
                self.faults.clear()
            elif method != "GET":
                return 405, {"msg": "use GET, POST or DELETE"}
        except (TypeError, ValueError) as exc:
            return 400, {"msg": str(exc)}
        return 200, {"faults": [asdict(f) for f in self.faults.pending()]}

    # --- authentication -------------------------------------------------------------------
    def _authenticate(self, environ: dict, query: str, body: str, params: dict[str, str]) -> str:
        api_key = environ.get("HTTP_X_MBX_APIKEY", "")
        if not api_key:
            raise ApiError(ERR_API_KEY_FORMAT)
        key = self._keys.get(api_key)
        if key is None:
            raise ApiError(ERR_API_KEY)
        # Binance signs "totalParams": the query string followed by the body, minus the signature.
        total = "&".join(part for part in (query, body) if part)
        pieces = total.split("&")
        signatures = [p.split("=", 1)[1] for p in pieces if p.startswith("signature=")]
        signed = "&".join(p for p in pieces if not p.startswith("signature="))
        expected = hmac.new(key.secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if len(signatures) != 1 or not hmac.compare_digest(expected, signatures[0].lower()):
            raise ApiError(ERR_SIGNATURE)
        try:
            stamp = int(params.get("timestamp", ""))
            window = int(params.get("recvWindow") or RECV_WINDOW_MS)
        except ValueError:
            raise ApiError((400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, "
                                        "or malformed.")) from None
        now = int(time.time() * 1000)
        if stamp > now + 1000 or now - stamp > min(window, 60000):
            raise ApiError(ERR_TIMESTAMP)
        return key.account

    # --- public endpoints -----------------------------------------------------------------
    def ping(self, params: dict, account: str) -> dict:
        return {}

    def server_time(self, params: dict, account: str) -> dict:
        return {"serverTime": int(time.time() * 1000)}

    def exchange_info(self, params: dict, account: str) -> dict:
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            ],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(m) for m in MARKETS_BY_ID.values()],
        }

    @staticmethod
    def _symbol_info(market: Market) -> dict:
        return {
            "symbol": _market_id(market), "status": "TRADING",
            "baseAsset": market.base, "baseAssetPrecision": 8,
            "quoteAsset": market.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
            "icebergAllowed": False, "ocoAllowed": False, "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": False, "allowTrailingStop": False, "cancelReplaceAllowed": False,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": _fmt(market.price_step), "maxPrice": "10000000.00000000",
                 "tickSize": _fmt(market.price_step)},
                {"filterType": "LOT_SIZE", "minQty": _fmt(market.min_amount), "maxQty": "9000000.00000000",
                 "stepSize": _fmt(market.amount_step)},
                {"filterType": "NOTIONAL", "minNotional": _fmt(market.min_notional), "applyMinToMarket": True,
                 "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
            ],
            "permissions": [], "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def _market(self, params: dict, *, required: bool = True) -> Market | None:
        symbol = params.get("symbol", "")
        if not symbol and not required:
            return None
        market = MARKETS_BY_ID.get(symbol.upper())
        if market is None:
            raise ApiError(ERR_SYMBOL)
        return market

    def ticker_price(self, params: dict, account: str) -> dict | list:
        market = self._market(params, required=False)
        now = timezone.now()
        markets = [market] if market else list(MARKETS_BY_ID.values())
        prices = [{"symbol": _market_id(m), "price": _fmt(self.feed.last_price(m.symbol, now))} for m in markets]
        return prices[0] if market else prices

    def ticker_24hr(self, params: dict, account: str) -> dict | list:
        market = self._market(params, required=False)
        markets = [market] if market else list(MARKETS_BY_ID.values())
        tickers = [self._ticker_24hr(m, timezone.now()) for m in markets]
        return tickers[0] if market else tickers

    def _ticker_24hr(self, market: Market, now: datetime) -> dict:
        candles = self.feed.candles(market.symbol, "1h", limit=24, end=now)
        last = self.feed.last_price(market.symbol, now)
        first = candles[0].open if candles else last
        volume = sum((c.volume for c in candles), Decimal(0))
        quote_volume = sum((c.volume * c.close for c in candles), Decimal(0))
        change = last - first
        return {
            "symbol": _market_id(market), "priceChange": _fmt(change),
            "priceChangePercent": f"{(change / first * 100 if first else 0):.3f}",
            "weightedAvgPrice": _fmt((quote_volume / volume).quantize(EIGHT_PLACES) if volume else last),
            "prevClosePrice": _fmt(first), "lastPrice": _fmt(last), "lastQty": "0.00000000",
            "bidPrice": _fmt(last - market.price_step), "bidQty": "1.00000000",
            "askPrice": _fmt(last + market.price_step), "askQty": "1.00000000",
            "openPrice": _fmt(first), "highPrice": _fmt(max((c.high for c in candles), default=last)),
            "lowPrice": _fmt(min((c.low for c in candles), default=last)),
            "volume": _fmt(volume.quantize(EIGHT_PLACES)), "quoteVolume": _fmt(quote_volume.quantize(EIGHT_PLACES)),
            "openTime": _ms(now - timedelta(hours=24)), "closeTime": _ms(now),
            "firstId": -1, "lastId": -1, "count": 0,
        }

    def klines(self, params: dict, account: str) -> list:
        market = self._market(params)
        interval = params.get("interval", "")
        if interval not in TIMEFRAME_SECONDS:
            raise ApiError((400, -1120, "Invalid interval."))
        step = TIMEFRAME_SECONDS[interval]
        limit = max(1, min(int(params.get("limit") or 500), 1000))
        start = int(params["startTime"]) if params.get("startTime") else None
        if params.get("endTime"):
            end = datetime.fromtimestamp(int(params["endTime"]) / 1000, tz=UTC)
        elif start is not None:
            end = datetime.fromtimestamp(start / 1000 + step * limit, tz=UTC)
        else:
            end = timezone.now()
        end = min(end, timezone.now())
        rows = []
        for c in self.feed.candles(market.symbol, interval, limit=limit, end=end):
            open_ms = _ms(c.ts)
            if start is not None and open_ms < start:
                continue
            rows.append([open_ms, _fmt(c.open), _fmt(c.high), _fmt(c.low), _fmt(c.close), _fmt(c.volume),
                         open_ms + step * 1000 - 1, _fmt((c.volume * c.close).quantize(EIGHT_PLACES)), 0,
                         "0.00000000", "0.00000000", "0"])
        return rows

    # --- signed endpoints -----------------------------------------------------------------
    def account_info(self, params: dict, account: str) -> dict:
        balances = [{"asset": b.asset, "free": _fmt(b.free), "locked": _fmt(b.locked)}
                    for b in sorted(paper_balances(account=account).values(), key=lambda b: b.asset)]
        if params.get("omitZeroBalances") == "true":
            balances = [b for b in balances if Decimal(b["free"]) or Decimal(b["locked"])]
        maker, taker = self.venue.fill_model.maker_fee_rate, self.venue.fill_model.taker_fee_rate
        return {
            "makerCommission": int(maker * 10000), "takerCommission": int(taker * 10000),
            "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": _fmt(maker), "taker": _fmt(taker), "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": False, "canDeposit": False, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": int(time.time() * 1000),
            "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"], "uid": 0,
        }

    def order_new(self, params: dict, account: str) -> dict:
        market = self._market(params)
        side, kind = params.get("side", "").upper(), params.get("type", "").upper()
        if side not in ("BUY", "SELL"):
            raise ApiError((400, -1117, "Invalid side."))
        if kind not in ("MARKET", "LIMIT", "LIMIT_MAKER"):
            raise ApiError((400, -1116, "Invalid orderType."))
        quantity = self._decimal(params, "quantity")
        price = self._decimal(params, "price") if kind != "MARKET" else None
        if kind == "LIMIT" and not params.get("timeInForce"):
            raise ApiError((400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, "
                                        "or malformed."))
        client_order_id = params.get("newClientOrderId") or f"x-local-{uuid.uuid4().hex[:20]}"
        if PaperVenueOrder.objects.filter(client_order_id=client_order_id).exists():
            raise ApiError(ERR_DUPLICATE)
        if kind == "LIMIT_MAKER" and self._crosses(market, side, price):
            raise ApiError((400, -2010, "Order would immediately match and take."))
        report = self.venue.submit(
            OrderRequest(client_order_id=client_order_id, symbol=market.symbol, side=side.lower(),
                         order_type="market" if kind == "MARKET" else "limit", quantity=quantity, price=price,
                         account=account),
            now=timezone.now(),
        )
        venue_order = PaperVenueOrder.objects.get(client_order_id=client_order_id)
        if report.status == PaperVenueOrder.Status.REJECTED:
            if report.reject_code == REJECT_INSUFFICIENT_FUNDS:
                raise ApiError(ERR_BALANCE)
            raise ApiError((400, -1013, f"Filter failure: {self._filter_name(report.reject_reason)}"))
        trades = list(venue_order.trades.order_by("id"))
        return {
            **self._order_json(venue_order, trades),
            "transactTime": int(time.time() * 1000),
            "fills": [{"price": _fmt(t.price), "qty": _fmt(t.quantity), "commission": _fmt(t.fee),
                       "commissionAsset": t.fee_currency, "tradeId": t.pk} for t in trades],
        }

    def _crosses(self, market: Market, side: str, price: Decimal | None) -> bool:
        last = self.feed.last_price(market.symbol, timezone.now())
        return price is not None and (price >= last if side == "BUY" else price <= last)

    @staticmethod
    def _filter_name(reason: str) -> str:
        if "notional" in reason:
            return "NOTIONAL"
        if "price" in reason:
            return "PRICE_FILTER"
        return "LOT_SIZE"

    @staticmethod
    def _decimal(params: dict, name: str) -> Decimal:
        try:
            value = Decimal(params[name])
        except (KeyError, InvalidOperation):
            raise ApiError((400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                                        "or malformed.")) from None
        if not value.is_finite() or value <= 0:
            raise ApiError((400, -1013, f"Invalid {name}."))
        return value

    def _find_order(self, params: dict, account: str, *, missing: tuple[int, int, str]) -> PaperVenueOrder:
        market = self._market(params)
        orders = PaperVenueOrder.objects.filter(account=account, symbol=market.symbol)
        if params.get("origClientOrderId"):
            venue_order = orders.filter(client_order_id=params["origClientOrderId"]).first()
        elif params.get("orderId", "").isdigit():
            venue_order = orders.filter(pk=int(params["orderId"])).first()
        else:
            raise ApiError((400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were "
                                        "empty/null!"))
        if venue_order is None:
            raise ApiError(missing)
        return venue_order

    def order_get(self, params: dict, account: str) -> dict:
        venue_order = self._find_order(params, account, missing=ERR_NO_ORDER)
        return self._order_json(venue_order, list(venue_order.trades.all()))

    def order_cancel(self, params: dict, account: str) -> dict:
        venue_order = self._find_order(params, account, missing=ERR_CANCEL_UNKNOWN)
        if venue_order.status != PaperVenueOrder.Status.OPEN:
            raise ApiError(ERR_CANCEL_UNKNOWN)  # Binance: a closed order is unknown to cancel
        self.venue.cancel(venue_order.client_order_id)
        venue_order.refresh_from_db()
        if venue_order.status != PaperVenueOrder.Status.CANCELLED:
            raise ApiError(ERR_CANCEL_UNKNOWN)  # it filled just before the cancel got there
        payload = self._order_json(venue_order, list(venue_order.trades.all()))
        payload["origClientOrderId"] = venue_order.client_order_id
        payload["clientOrderId"] = params.get("newClientOrderId") or f"cancel-{uuid.uuid4().hex[:16]}"
        payload["transactTime"] = int(time.time() * 1000)
        return payload

    def open_orders(self, params: dict, account: str) -> list:
        market = self._market(params, required=False)
        orders = PaperVenueOrder.objects.filter(account=account, status=PaperVenueOrder.Status.OPEN)
        if market is not None:
            orders = orders.filter(symbol=market.symbol)
        return [self._order_json(o, list(o.trades.all())) for o in orders.order_by("id")]

    def my_trades(self, params: dict, account: str) -> list:
        market = self._market(params)
        trades = PaperOrder.objects.filter(account=account, symbol=market.symbol).select_related("venue_order")
        if params.get("orderId"):
            trades = trades.filter(venue_order_id=int(params["orderId"]))
        if params.get("fromId"):
            trades = trades.filter(pk__gte=int(params["fromId"]))
        if params.get("startTime"):
            trades = trades.filter(created_at__gte=datetime.fromtimestamp(int(params["startTime"]) / 1000, tz=UTC))
        if params.get("endTime"):
            trades = trades.filter(created_at__lte=datetime.fromtimestamp(int(params["endTime"]) / 1000, tz=UTC))
        limit = max(1, min(int(params.get("limit") or 500), 1000))
        return [
            {"symbol": _market_id(market), "id": t.pk, "orderId": t.venue_order_id, "orderListId": -1,
             "price": _fmt(t.price), "qty": _fmt(t.quantity), "quoteQty": _fmt(t.price * t.quantity),
             "commission": _fmt(t.fee), "commissionAsset": t.fee_currency, "time": _ms(t.created_at),
             "isBuyer": t.side == "buy", "isMaker": t.liquidity == "maker", "isBestMatch": True}
            for t in trades.order_by("id")[:limit]
        ]

    @staticmethod
    def _order_json(venue_order: PaperVenueOrder, trades: list[PaperOrder]) -> dict:
        market = PAPER_MARKETS[venue_order.symbol]
        status = BINANCE_STATUS.get(venue_order.status) or (
            "PARTIALLY_FILLED" if venue_order.filled_quantity > 0 else "NEW")
        quote = sum((t.price * t.quantity for t in trades), Decimal(0))
        created, updated = _ms(venue_order.created_at), _ms(venue_order.updated_at)
        return {
            "symbol": _market_id(market), "orderId": venue_order.pk, "orderListId": -1,
            "clientOrderId": venue_order.client_order_id, "price": _fmt(venue_order.price or Decimal(0)),
            "origQty": _fmt(venue_order.quantity), "executedQty": _fmt(venue_order.filled_quantity),
            "cummulativeQuoteQty": _fmt(quote), "status": status,
            "timeInForce": "GTC", "type": venue_order.order_type.upper(), "side": venue_order.side.upper(),
            "stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": created, "updateTime": updated,
            "isWorking": True, "workingTime": created, "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    # --- serving --------------------------------------------------------------------------
    def serve(self, *, host: str = "127.0.0.1", port: int = 0, match_seconds: float | None = None) -> ExchangeServer:
        """Start serving in background threads; `stop()` the returned server when done."""
        return ExchangeServer(self, host=host, port=port, match_seconds=match_seconds).start()


ROUTES: dict[tuple[str, str], tuple[Callable[[LocalExchange, dict, str], Any], bool]] = {
    ("GET", "/api/v3/ping"): (LocalExchange.ping, False),
    ("GET", "/api/v3/time"): (LocalExchange.server_time, False),
    ("GET", "/api/v3/exchangeInfo"): (LocalExchange.exchange_info, False),
    ("GET", "/api/v3/ticker/price"): (LocalExchange.ticker_price, False),
    ("GET", "/api/v3/ticker/24hr"): (LocalExchange.ticker_24hr, False),
    ("GET", "/api/v3/klines"): (LocalExchange.klines, False),
    ("GET", "/api/v3/account"): (LocalExchange.account_info, True),
    ("POST", "/api/v3/order"): (LocalExchange.order_new, True),
    ("GET", "/api/v3/order"): (LocalExchange.order_get, True),
    ("DELETE", "/api/v3/order"): (LocalExchange.order_cancel, True),
    ("GET", "/api/v3/openOrders"): (LocalExchange.open_orders, True),
    ("GET", "/api/v3/myTrades"): (LocalExchange.my_trades, True),
}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        logger.debug("local exchange: " + format, *args)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False  # a request held by a "timeout" fault must not delay stop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout fault) closes its socket before we answer: not an error.
        logger.debug("local exchange: connection from %s ended early", client_address)


def require_loopback(host: str) -> None:
    """The local exchange never listens beyond this machine (it trades with no credentials check
    on /_faults and holds paper money only)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the local exchange binds loopback addresses only, not {host!r}")


class ExchangeServer:
    """The local exchange on a port, served by threads; optionally matching on its own."""

    def __init__(self, exchange: LocalExchange, *, host: str, port: int, match_seconds: float | None) -> None:
        require_loopback(host)
        self.exchange = exchange
        self.httpd = make_server(host, port, exchange, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.host, self.port = host, self.httpd.server_address[1]
        self.match_seconds = match_seconds
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ExchangeServer:
        serve = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                 name=f"local-exchange-{self.port}", daemon=True)
        serve.start()
        self._threads.append(serve)
        if self.match_seconds:
            matcher = threading.Thread(target=self._match_loop, name=f"local-exchange-match-{self.port}", daemon=True)
            matcher.start()
            self._threads.append(matcher)
        return self

    def _match_loop(self) -> None:
        # A real exchange matches on its own, whoever its clients are.
        while not self._stopping.wait(self.match_seconds):
            try:
                self.exchange.match()
            except Exception:
                logger.exception("local exchange: matching pass failed")
            finally:
                connections.close_all()

    def request_stop(self) -> None:
        """Ask `wait()` to return (safe from a signal handler)."""
        self._stopping.set()

    def wait(self) -> None:
        """Block until `request_stop()` (the management command), then stop."""
        try:
            while not self._stopping.wait(0.5):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
