"""The `backtest` bench scenario in its --quick form: it runs and gives both numbers (never judged
on time). In-process, as `manage.py bench --inner` runs it: the scenario needs no database, and
the command's outer half (a throw-away database, migrations) is covered by test_bench_quick.py."""

from __future__ import annotations

import pytest

from tinywindow.bench import backtest
from tinywindow.bench.core import BenchContext
from tinywindow.management.commands.bench import SCENARIOS, Command

pytestmark = pytest.mark.bench


def test_bench_quick_backtest_when_run_then_candles_per_second_for_both_engines(tmp_path):
    assert SCENARIOS["backtest"] == "tinywindow.bench.backtest"
    said: list[str] = []
    [row] = backtest.run(BenchContext(quick=True, say=said.append, log_dir=tmp_path))
    assert row.scenario == "backtest"
    assert row.tinywindow > 0 and row.baseline > 0
    assert "identical trades" in row.note  # the same round trips as backtesting.py on the same data
    assert row.passed is not None
    line = Command._table([row]).splitlines()[-1]
    assert line.startswith("| backtest | SMA crossover, 50,000 1m candles: candles/s")
