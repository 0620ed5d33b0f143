"""`python manage.py backtest --strategy sma_cross --symbol BTC/USDT --start 2026-01-01 --end 2026-01-08`."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from tinywindow.cli import EXIT_FAILURE, EXIT_USAGE, cli_actor, cli_errors
from tinywindow.exceptions import MarketDataUnavailable, ValidationError
from tinywindow.runtime import var_dir
from trading.feeds.base import timeframe_seconds
from trading.strategies import BUILTIN_STRATEGIES

HELP = """Backtest a strategy: the same strategy class and order sizing as a live agent, filled by the
paper venue's model (fees, slippage, volume cap, partial fills), bar by bar without Celery or the
database in the loop. Prints the performance figures and writes report.html (equity, drawdown,
trades on price; the PNGs beside it) and trades.csv into --output.

Times are ISO 8601, UTC when no zone is given; the run covers the bars opening in [start, end).
Exit codes: 0 done, 2 bad input (unknown strategy, bad parameters, start >= end, no candles),
1 database failure.

Examples:
  python manage.py backtest --strategy sma_cross --symbol BTC/USDT --start 2026-01-01 --end 2026-01-08
  python manage.py backtest --strategy rsi_reversion --symbol ETH/USDT --start 2026-01-01 --end 2026-01-02 \\
      --params period=14 oversold=25 --timeframe 5m
  python manage.py backtest --strategy donchian_breakout --symbol BTC/USDT --source stored --exchange binance \\
      --start 2024-01-01 --end 2024-02-01 --params '{"entry": 55, "exit": 20}' --store
"""


def _when(raw: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise CommandError(f"--{name} {raw!r} is not a date like 2026-01-01 or 2026-01-01T12:00:00Z",
                           returncode=EXIT_USAGE) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _params(raw: list[str] | None) -> dict[str, Any]:
    """--params '{"fast": 10}' (one JSON object) or --params fast=10 slow=30 (k=v words)."""
    if not raw:
        return {}
    if len(raw) == 1 and raw[0].lstrip().startswith("{"):
        try:
            value = json.loads(raw[0])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not valid JSON: {exc}", returncode=EXIT_USAGE) from None
        if not isinstance(value, dict):
            raise CommandError("--params JSON must be an object like {\"fast\": 10}", returncode=EXIT_USAGE)
        return value
    params: dict[str, Any] = {}
    for word in raw:
        key, sep, value = word.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--params {word!r}: expected key=value (or one JSON object)", returncode=EXIT_USAGE)
        params[key.strip()] = {"true": True, "false": False}.get(value.strip().lower(), value.strip())
    return params


def _strategy_path(name: str) -> str:
    if name in BUILTIN_STRATEGIES:
        return BUILTIN_STRATEGIES[name]
    if "." in name:
        return name  # a dotted path to any Strategy subclass, as an agent names it
    raise CommandError(f"unknown strategy {name!r}; built in: {', '.join(BUILTIN_STRATEGIES)} "
                       f"(or a dotted path to a Strategy class)", returncode=EXIT_USAGE)


class Command(BaseCommand):
    help = HELP

    def create_parser(self, prog_name, subcommand, **kwargs):
        from argparse import RawDescriptionHelpFormatter

        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter  # keep the examples' line breaks
        return parser

    def add_arguments(self, parser):
        parser.add_argument("--strategy", required=True,
                            help=f"{', '.join(BUILTIN_STRATEGIES)}, or a dotted path to a Strategy class")
        parser.add_argument("--symbol", required=True, help="e.g. BTC/USDT (a market the paper venue lists)")
        parser.add_argument("--start", required=True, help="first bar's open time (ISO 8601; UTC if no zone)")
        parser.add_argument("--end", required=True, help="bars opening before this time (ISO 8601; UTC if no zone)")
        parser.add_argument("--params", nargs="+", metavar="PARAM",
                            help="strategy parameters: one JSON object, or key=value words")
        parser.add_argument("--timeframe", default="1m", help="candle length (default 1m)")
        parser.add_argument("--source", choices=("synthetic", "stored"), default="synthetic",
                            help="synthetic: the seeded synthetic market (default, offline); stored: the candles "
                                 "table (import_candles, download_candles)")
        parser.add_argument("--exchange", help="stored candles of this exchange (default: the only one storing them)")
        parser.add_argument("--seed", type=int, default=None,
                            help="synthetic market seed (default SYNTHETIC_FEED_SEED, what live agents see)")
        parser.add_argument("--capital", default="10000", help="the agent's capital in the quote currency")
        parser.add_argument("--output", help="report directory (default var/backtests/<time>-<strategy>-<symbol>)")
        parser.add_argument("--store", action="store_true", help="also store the run and its fills (admin: Backtests)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")

    def handle(self, *args, **opts):
        from paper.fills import FillModel
        from paper.markets import paper_market
        from tinywindow.exceptions import InvalidOrder
        from trading.backtest.data import bar_count, candles_stored, candles_synthetic
        from trading.backtest.engine import BacktestConfig, backtest_run
        from trading.backtest.report import figures_lines, report_write
        from trading.strategies.base import load_strategy

        path = _strategy_path(opts["strategy"])
        timeframe = opts["timeframe"]
        symbol = opts["symbol"]
        try:
            step = timeframe_seconds(timeframe)
            strategy = load_strategy(path, _params(opts["params"]))
        except ValidationError as exc:
            raise CommandError(f"{exc.field}: {exc.message}" if exc.field else exc.message,
                               returncode=EXIT_USAGE) from None
        try:
            market = paper_market(symbol)
        except InvalidOrder as exc:
            raise CommandError(f"{exc}; the backtest fills like the paper venue, which lists only its own markets",
                               returncode=EXIT_USAGE) from None
        try:
            capital = Decimal(opts["capital"])
        except InvalidOperation:
            capital = Decimal(-1)
        if not capital.is_finite() or capital <= 0:
            raise CommandError(f"--capital must be a positive amount, got {opts['capital']!r}", returncode=EXIT_USAGE)
        start, end = _when(opts["start"], "start"), _when(opts["end"], "end")
        if start >= end:
            raise CommandError(f"--start {start.isoformat()} must be before --end {end.isoformat()}",
                               returncode=EXIT_USAGE)
        total = bar_count(start, end, timeframe)
        if total < 1:
            raise CommandError(f"no {timeframe} bar opens between --start and --end", returncode=EXIT_USAGE)
        stream = getattr(self.stderr, "_out", sys.stderr)  # tqdm redraws with "\r": the raw stream

        def bar(desc: str, count: int, unit: str) -> tqdm:
            return tqdm(total=count, desc=desc, unit=unit, unit_scale=True, disable=opts["no_progress"],
                        file=stream, dynamic_ncols=True)

        if opts["source"] == "synthetic":
            seed = settings.SYNTHETIC_FEED_SEED if opts["seed"] is None else opts["seed"]
            source = f"synthetic:{seed}"
            with bar("candles", total, "candle") as progress, cli_errors():
                candles = candles_synthetic(symbol=symbol, timeframe=timeframe, start=start, end=end, seed=seed,
                                            progress=progress.update)
        else:
            with cli_errors():
                try:
                    candles = candles_stored(symbol=symbol, timeframe=timeframe, start=start, end=end,
                                             exchange=opts["exchange"])
                except MarketDataUnavailable as exc:
                    raise CommandError(f"{exc}: import_candles or download_candles stores some",
                                       returncode=EXIT_USAGE) from None
            source = f"stored:{opts['exchange'] or 'any'}"
        if len(candles) <= strategy.warmup:
            raise CommandError(
                f"{len(candles)} {symbol} {timeframe} candle(s) from {source} between {start.isoformat()} and "
                f"{end.isoformat()}: {strategy.name} needs more than {strategy.warmup} to decide once",
                returncode=EXIT_USAGE)
        holes = sum(1 for a, b in zip(candles, candles[1:], strict=False) if (b.ts - a.ts).total_seconds() != step)
        if holes:
            # A live tick makes no decision on gapped data; the backtest walks over holes, and says so.
            self.stderr.write(f"warning: {holes} gap(s) in the stored candles; bars are replayed as stored")

        config = BacktestConfig(symbol=symbol, timeframe=timeframe, capital=capital, market=market,
                                fill_model=FillModel.from_settings(),
                                passes_per_bar=max(1, step // max(1, settings.PAPER_MATCH_SECONDS)))
        started = time.perf_counter()
        with bar("backtest", len(candles), "bar") as progress:
            result = backtest_run(strategy, candles, config, progress=progress.update)
        elapsed = time.perf_counter() - started

        title = f"{strategy!r} on {symbol} {timeframe}, {candles[0].ts:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC"
        output = Path(opts["output"]) if opts["output"] else (
            var_dir() / "backtests" / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{strategy.name}-{symbol.replace('/', '')}")
        fm = config.fill_model
        facts = [
            ("strategy", f"{path} {json.dumps(strategy.params)}"),
            ("market", f"{symbol} {timeframe}, {len(candles):,} candles from {source}"),
            ("fill model", f"paper venue: taker fee {fm.taker_fee_rate}, slippage {fm.base_slippage_bps} bps + impact, "
                           f"at most {fm.max_volume_share} of a bar's volume per pass, "
                           f"{config.passes_per_bar} pass(es) per bar"),
            ("fills", f"{len(result.fills):,} ({len(result.rejected):,} order(s) refused for funds)"),
        ]
        try:
            files = report_write(result, output, title=title, run_facts=facts)
        except OSError as exc:
            raise CommandError(f"cannot write the report into {output}: {exc}", returncode=EXIT_FAILURE) from None

        final = result.equity[-1]
        lines = [*facts, *figures_lines(result.figures(), capital=capital, final_equity=final)]
        width = max(len(k) for k, _ in lines)
        for key, value in lines:
            self.stdout.write(f"{key.ljust(width)}  {value}")
        self.stdout.write(f"{'speed'.ljust(width)}  {len(candles) / elapsed:,.0f} candles/s")
        self.stdout.write(f"{'report'.ljust(width)}  {files.html}")
        self.stdout.write(f"{'trades'.ljust(width)}  {files.trades_csv}")
        if opts["store"]:
            from trading.services.backtests import backtest_store

            with cli_errors():
                run = backtest_store(result=result, source=source, start=start, end=end,
                                     report_path=str(files.html.resolve()), actor=cli_actor())
            self.stdout.write(f"{'stored'.ljust(width)}  backtest {run.pk} "
                              f"(admin: /admin/trading/backtestrun/{run.pk}/)")
