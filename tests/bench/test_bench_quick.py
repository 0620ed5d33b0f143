"""`manage.py bench --quick` for the order path: it runs, and every scenario prints a number.

Times are never asserted: these machines are shared and noisy, and the goals are judged by the
bench itself (docs/benchmarks.md). The command picks its servers like the rest of the suite:
the configured PostgreSQL/Redis when they answer, embedded ones otherwise; it works in its own
throw-away database and its own Redis database number (BENCH_REDIS_DB, default 12).
Deselect with `-m "not bench"`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tinywindow.runtime import BASE_DIR

pytestmark = pytest.mark.bench

SCENARIOS = {"order_throughput": "order throughput", "tick_to_fill": "tick to fill"}
NUMBER = re.compile(r"^\d[\d,]*(\.\d+)?( \S+)?$")


def _rows(stdout: str) -> list[list[str]]:
    """The table's data rows, as cells (scenario, measure, TinyWindow, baseline, ratio, goal, result)."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith(("| scenario ", "|---")):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def run_bench_quick(names, *, timeout: float) -> tuple[list[list[str]], str]:
    """`manage.py bench --quick --only NAME...` as a real process: its table rows and its output's tail.

    Fails the calling test when the command exits non-zero."""
    argv = [sys.executable, "manage.py", "bench", "--quick", "--output", "-"]
    for name in names:
        argv += ["--only", name]
    result = subprocess.run(argv, cwd=BASE_DIR, env=dict(os.environ), capture_output=True, text=True, timeout=timeout)
    output = result.stdout[-6000:] + "\n" + result.stderr[-4000:]
    assert result.returncode == 0, output
    return _rows(result.stdout), output


def test_bench_quick_order_path_prints_a_number_per_scenario():
    rows, output = run_bench_quick(SCENARIOS, timeout=300)
    for title in SCENARIOS.values():
        mine = [row for row in rows if row[0] == title]
        assert mine, f"no row for {title!r}:\n{output}"
        for row in mine:
            assert len(row) == 7, row
            assert NUMBER.match(row[2]), f"{title}: TinyWindow value {row[2]!r} is not a number"
            assert NUMBER.match(row[3]), f"{title}: baseline value {row[3]!r} is not a number"
