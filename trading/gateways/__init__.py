"""Pick the gateway for an agent's venue."""

from __future__ import annotations

from trading.gateways.base import Gateway


def gateway_for(exchange: str) -> Gateway:
    if exchange == "paper":
        from trading.feeds import feed_for
        from trading.gateways.paper import PaperGateway

        return PaperGateway(feed=feed_for("synthetic"))
    from tinywindow.exceptions import ConfigurationError

    raise ConfigurationError(f"no gateway for exchange {exchange!r} yet (live exchanges: trading-core work)")
