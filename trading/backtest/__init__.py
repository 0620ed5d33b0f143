"""Backtests: the live strategy classes replayed over candles with the paper venue's fill model."""
