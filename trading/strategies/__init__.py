"""The strategies TinyWindow ships, by short name (`manage.py backtest --strategy sma_cross`).

Agents name their strategy by dotted path (any Strategy subclass works); these names are the
short forms for the built-in ones.
"""

BUILTIN_STRATEGIES: dict[str, str] = {
    "sma_cross": "trading.strategies.sma_cross.SmaCross",
    "rsi_reversion": "trading.strategies.rsi_reversion.RsiReversion",
    "donchian_breakout": "trading.strategies.donchian_breakout.DonchianBreakout",
}
