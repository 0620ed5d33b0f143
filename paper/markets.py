"""Markets listed on the paper venue: precision and minimums, like an exchange's market data."""

from __future__ import annotations

from decimal import Decimal

from tinywindow.exceptions import InvalidOrder
from trading.gateways.base import Market

D = Decimal

PAPER_MARKETS: dict[str, Market] = {
    m.symbol: m
    for m in (
        Market("BTC/USDT", "BTC", "USDT", D("0.00001"), D("0.01"), D("0.00001"), D("5")),
        Market("ETH/USDT", "ETH", "USDT", D("0.0001"), D("0.01"), D("0.0001"), D("5")),
        Market("SOL/USDT", "SOL", "USDT", D("0.001"), D("0.01"), D("0.001"), D("5")),
        Market("BNB/USDT", "BNB", "USDT", D("0.001"), D("0.01"), D("0.001"), D("5")),
        Market("XRP/USDT", "XRP", "USDT", D("0.1"), D("0.0001"), D("0.1"), D("5")),
        Market("ADA/USDT", "ADA", "USDT", D("0.1"), D("0.0001"), D("0.1"), D("5")),
        Market("DOGE/USDT", "DOGE", "USDT", D("1"), D("0.00001"), D("1"), D("5")),
        Market("LTC/USDT", "LTC", "USDT", D("0.001"), D("0.01"), D("0.001"), D("5")),
    )
}


def paper_market(symbol: str) -> Market:
    try:
        return PAPER_MARKETS[symbol]
    except KeyError:
        raise InvalidOrder(f"unknown symbol {symbol!r} on the paper venue") from None
