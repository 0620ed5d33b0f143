"""`manage.py bench --quick` for the API, the runbook's queries, the risk snapshot, agent
performance, agent scale and the kill switch: it runs, and every scenario prints numbers. Times are
never asserted (see test_bench_quick.py); the goals are judged by the bench itself, in
docs/benchmarks.md.
"""

from __future__ import annotations

import pytest

from tests.bench.test_bench_quick import NUMBER, run_bench_quick
from tinywindow.management.commands.bench import SCENARIOS as ALL_SCENARIOS

pytestmark = pytest.mark.bench

# scenario name -> the title its rows carry, how many rows it writes, whether it has a baseline
SCENARIOS = {"api": ("api", 4, True), "runbook_queries": ("runbook queries", 10, True),
             "risk_snapshot": ("risk snapshot", 2, True), "agent_performance": ("agent performance", 2, True),
             "agent_scale": ("agent scale", 2, True),
             "kill_switch": ("kill switch", 2, False)}


def test_every_bench_scenario_is_covered_by_a_quick_test():
    from tests.bench.test_bench_quick import SCENARIOS as ORDER_PATH

    covered = set(SCENARIOS) | set(ORDER_PATH) | {"backtest"}  # backtest: test_bench_backtest.py
    assert set(ALL_SCENARIOS) <= covered, sorted(set(ALL_SCENARIOS) - covered)


def test_bench_quick_api_queries_snapshot_scale_and_kill_switch_print_numbers_for_every_row():
    rows, output = run_bench_quick(SCENARIOS, timeout=600)
    for title, count, has_baseline in SCENARIOS.values():
        mine = [row for row in rows if row[0] == title]
        assert len(mine) >= count, f"{len(mine)} rows for {title!r}, expected {count}:\n{output}"
        for row in mine:
            assert len(row) == 7, row
            assert NUMBER.match(row[2]), f"{title}: TinyWindow value {row[2]!r} is not a number"
            if has_baseline:
                assert NUMBER.match(row[3]), f"{title}: baseline value {row[3]!r} is not a number"
    checks = [row for row in rows if row[0] == "circuit breakers"]  # agent_scale's, no baseline
    assert len(checks) == 1 and NUMBER.match(checks[0][2]), f"circuit-breaker check row:\n{output}"
