"""One error tree. The class of an error says how TinyWindow responds to it.

    TinyWindowError
    ├── ConfigurationError      bad settings or environment: refuse to start, tell the operator what to fix
    ├── ValidationError         bad input from a user or API client: HTTP 400 / exit code 2, nothing written
    ├── OperationalError        a human must act (state unknown, service down): fail closed
    │   ├── SafetyStateUnknown  kill-switch/breaker state cannot be read: refuse to trade
    │   └── MarketDataUnavailable  no candle/price for the symbol and time asked: no decision, no order
    ├── TradingHalted           the kill switch or a breaker forbids this order: order rejected with reason
    ├── RiskRejected            a pre-trade limit refuses this order: order rejected with reason
    ├── InvalidOrderTransition  a bug or a replay: an illegal order state move is never stored
    └── ExchangeError           anything a venue says
        ├── TemporaryExchangeError   network, rate limit, venue down: retry with backoff, bounded
        └── PermanentExchangeError   the venue refused the order for good: order rejected
            ├── InvalidOrder
            ├── InsufficientFunds
            └── ExchangeAuthError   keys refused (signature, permissions): order rejected, a human fixes the keys
"""

from __future__ import annotations


class TinyWindowError(Exception):
    """Root of every error TinyWindow raises on purpose."""


class ConfigurationError(TinyWindowError):
    """Settings or environment are wrong; the process must not start."""


class ValidationError(TinyWindowError):
    """Input is invalid. `field` names the offending field when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class OperationalError(TinyWindowError):
    """Something a human must look at; the system fails closed meanwhile."""


class SafetyStateUnknown(OperationalError):
    """Neither Redis nor PostgreSQL could tell whether trading is allowed: refuse to trade."""


class MarketDataUnavailable(OperationalError):
    """A feed has no data for the symbol and time asked (nothing stored, nothing fetched).

    The tick makes no decision and no order; an operator imports or downloads candles, or checks
    the venue.
    """


class TradingHalted(TinyWindowError):
    """The kill switch or an open circuit breaker forbids this order."""


class RiskRejected(TinyWindowError):
    """A pre-trade risk limit refuses this order."""


class InvalidOrderTransition(TinyWindowError):
    """An order state change that the transition table does not allow."""


class ExchangeError(TinyWindowError):
    """Raised by a gateway; never a raw ccxt exception."""


class TemporaryExchangeError(ExchangeError):
    """Network trouble, rate limit, venue unavailable: safe to retry later.

    `retry_after` (seconds) is the venue's own Retry-After when it sent one (a 429/418): the
    retry must not come sooner, or the venue escalates (Binance bans the address with 418).
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentExchangeError(ExchangeError):
    """The venue refused the request for good: do not retry."""


class InvalidOrder(PermanentExchangeError):
    pass


class InsufficientFunds(PermanentExchangeError):
    pass


class ExchangeAuthError(PermanentExchangeError):
    """The venue refused our credentials (bad key, bad signature, no permission): no retry helps."""
