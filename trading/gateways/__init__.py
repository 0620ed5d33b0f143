"""Pick the gateway for an agent's venue: `paper`, or any ccxt exchange id (`binance`...)."""

from __future__ import annotations

from trading.gateways.base import Gateway


def gateway_for(exchange: str) -> Gateway:
    """The gateway for `exchange`. Live exchanges are refused unless enabled (see `ccxt_gateway_for`)."""
    if exchange == "paper":
        from django.conf import settings

        from trading.feeds import feed_for
        from trading.gateways.paper import PaperGateway

        return PaperGateway(feed=feed_for(settings.PAPER_FEED))
    from trading.gateways.ccxt import ccxt_gateway_for

    return ccxt_gateway_for(exchange)
