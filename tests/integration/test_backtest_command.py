"""`manage.py backtest`: figures, report, trades.csv, storing in the admin, and bad input."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from tests.desk import make_role_users
from tests.helpers import manage
from trading.feeds.base import Candle
from trading.models import BacktestRun, BacktestTrade
from trading.services.market_data import candles_store

D = Decimal


def _printed(stdout: str) -> dict[str, str]:
    return {m[1].strip(): m[2].strip() for m in re.finditer(r"^(\S.*?)\s{2,}(.*)$", stdout, re.M)}


def test_backtest_when_synthetic_then_figures_report_and_trades_csv_agree(tmp_path):
    result = manage("backtest", "--strategy", "sma_cross", "--symbol", "BTC/USDT", "--start", "2026-01-01",
                    "--end", "2026-01-01T08:00", "--params", "fast=5", "slow=20", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    printed = _printed(result.stdout)
    assert printed["market"] == "BTC/USDT 1m, 480 candles from synthetic:42"
    assert "backtest: 100%" in result.stderr  # the progress bar, on stderr
    for name in ("report.html", "trades.csv", "equity.png", "drawdown.png", "trades.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    page = (tmp_path / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3  # self-contained: the images are inside
    assert "<script" not in page
    rows = list(csv.DictReader((tmp_path / "trades.csv").open()))
    assert rows, "a crossover strategy on 8 hours of 1m candles trades"
    assert printed["fills"].startswith(f"{len(rows)} ")
    # The printed figures from the CSV, independently: a closed trade is an order that realized PnL.
    per_order: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        if row["side"] == "sell":
            per_order[row["order"]] += D(row["realized_pnl"])
    assert printed["trades (orders that realized PnL)"] == str(len(per_order))
    assert printed["total PnL (closed trades)"] == f"{sum(per_order.values()):,.2f}"
    wins = sum(1 for pnl in per_order.values() if pnl > 0)
    assert printed["win rate"] == f"{wins / len(per_order) * 100:.2f}%"
    assert all(row["reason"] for row in rows)  # every fill carries the decision's reason


@pytest.mark.parametrize(("args", "message"), [
    (["--strategy", "nope"], "unknown strategy 'nope'"),
    (["--params", "fast=30", "slow=10"], "slow (10) must be greater than fast (30)"),
    (["--params", "speed=3"], "unknown parameter(s) for sma_cross: speed"),
    (["--params", "{not json"], "--params is not valid JSON"),
    (["--start", "2026-01-02"], "must be before --end"),
    (["--start", "yesterday"], "is not a date"),
    (["--timeframe", "7m"], "unknown timeframe '7m'"),
    (["--symbol", "FOO/BAR"], "unknown symbol 'FOO/BAR'"),
    (["--capital", "-5"], "--capital must be a positive amount"),
    (["--end", "2026-01-01T00:10"], "needs more than 20 to decide once"),
])
def test_backtest_when_input_bad_then_one_clear_message_and_exit_2(args, message, tmp_path):
    base = {"--strategy": "sma_cross", "--symbol": "BTC/USDT", "--start": "2026-01-01", "--end": "2026-01-01T06:00"}
    for flag in args[::2]:
        base.pop(flag, None)
    argv = [item for pair in base.items() for item in pair] + args + ["--output", str(tmp_path), "--no-progress"]
    with pytest.raises(CommandError) as caught:
        call_command("backtest", *argv, stdout=io.StringIO(), stderr=io.StringIO())
    assert caught.value.returncode == 2
    assert message in str(caught.value)
    assert not (tmp_path / "report.html").exists()


def test_backtest_cli_when_strategy_unknown_then_one_line_on_stderr_exit_2_no_traceback(tmp_path):
    result = manage("backtest", "--strategy", "nope", "--symbol", "BTC/USDT", "--start", "2026-01-01",
                    "--end", "2026-01-02", "--output", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "CommandError: unknown strategy 'nope'; built in: sma_cross, rsi_reversion, donchian_breakout "
        "(or a dotted path to a Strategy class)")
    assert result.stdout == ""


@pytest.mark.django_db
def test_backtest_when_stored_candles_and_store_then_run_and_fills_in_the_admin(tmp_path):
    start = datetime(2025, 5, 1, tzinfo=UTC)
    closes = [100 + 2 * (i % 40 if (i // 40) % 2 == 0 else 40 - i % 40) for i in range(300)]  # a zigzag
    candles_store(exchange="binance", symbol="ETH/USDT", timeframe="1m", candles=[
        Candle(start + timedelta(minutes=i), D(c), D(c) + 1, D(c) - 1, D(c), D(500)) for i, c in enumerate(closes)
    ])
    out = io.StringIO()
    call_command("backtest", "--strategy", "donchian_breakout", "--symbol", "ETH/USDT", "--source", "stored",
                 "--start", "2025-05-01", "--end", "2025-05-02", "--params", '{"entry": 10, "exit": 5}',
                 "--output", str(tmp_path), "--store", "--no-progress", stdout=out, stderr=io.StringIO())
    printed = _printed(out.getvalue())
    assert printed["market"] == "ETH/USDT 1m, 300 candles from stored:any"
    run = BacktestRun.objects.get()
    assert run.strategy == "trading.strategies.donchian_breakout.DonchianBreakout"
    assert run.params == {"entry": 10, "exit": 5, "exposure": "0.5"}
    assert (run.symbol, run.timeframe, run.candles) == ("ETH/USDT", "1m", 300)
    assert run.fills == BacktestTrade.objects.filter(run=run).count() > 0
    assert Path(run.report_path) == (tmp_path / "report.html").resolve()
    assert f"{run.total_pnl:,.2f}" == printed["total PnL (closed trades)"]

    admin = Client()
    admin.force_login(make_role_users()["admin"])
    listing = admin.get("/admin/trading/backtestrun/")
    assert listing.status_code == 200 and "DonchianBreakout" in listing.content.decode()
    page = admin.get(f"/admin/trading/backtestrun/{run.pk}/change/")
    assert page.status_code == 200 and f"{run.fills} fill(s)" in page.content.decode()
    report = admin.get(f"/admin/trading/backtestrun/{run.pk}/report/")
    assert report.status_code == 200
    assert b"data:image/png;base64," in b"".join(report.streaming_content)
    fills = admin.get(f"/admin/trading/backtesttrade/?run__id__exact={run.pk}")
    assert fills.status_code == 200
    assert Client().get(f"/admin/trading/backtestrun/{run.pk}/report/").status_code == 302  # login first


@pytest.mark.django_db
def test_backtest_when_no_stored_candles_then_command_error_exit_2(tmp_path):
    with pytest.raises(CommandError, match="no BTC/USDT 1m candles are stored") as caught:
        call_command("backtest", "--strategy", "sma_cross", "--symbol", "BTC/USDT", "--source", "stored",
                     "--start", "2025-05-01", "--end", "2025-05-02", "--output", str(tmp_path), "--no-progress",
                     stdout=io.StringIO(), stderr=io.StringIO())
    assert caught.value.returncode == 2
