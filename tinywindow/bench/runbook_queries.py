"""Runbook queries: every SQL query of the runbook on 1,000,000 orders and 1,000,000 paper orders.

The tables are filled in bulk by PostgreSQL itself (`INSERT ... SELECT ... generate_series`):
a year of trading (created_at spread evenly over 365 days, so "the last hour" holds ~114
orders and "the last 30 days" ~82,000), most orders executed with a realized PnL, a few
cancelled/rejected, the newest ones still open; breaker and kill-switch events and
snapshots (a tenth as many), one performance row per agent. Each query of the runbook (read
from its ```sql blocks, verbatim) is timed by the server (EXPLAIN ANALYZE: planning +
execution), median of several runs after a warm-up, and EXPLAINed: which of the project's
indexes the plan uses.

Baseline: the same query, in the same run, on copies of the tables made with
`CREATE TABLE ... AS SELECT` — same rows, none of the project's indexes (primary keys and
unique constraints gone too). Goal (issue 10): under 50 ms, with an index used. Queries that
read a system view (`pg_stat_activity`) or return a whole small table (agent performance:
one row per agent) cannot use an index to do less work; they are judged on time alone.
"""

from __future__ import annotations

import json
import re
import statistics
import time

from tinywindow.bench.core import BenchContext, BenchRow, load_note
from tinywindow.runtime import BASE_DIR

GOAL_MS = 50.0
RUNBOOK_CANDIDATES = (BASE_DIR.parent / "shared" / "runbook.md", BASE_DIR / "docs" / "runbook.md")
TABLES = ("orders", "paper_orders", "circuit_breaker_events", "kill_switch_events", "portfolio_snapshots",
          "agent_performance")
COPY_PREFIX = "bench_noidx_"
# Queries that return every row of their relation, or read a system view: no index can make them do less.
WHOLE_RELATION = ("pg_stat_activity", "agent_performance")
SPAN_DAYS = 365
AGENTS = 1_000


def runbook_queries() -> list[tuple[str, str]]:
    """(title, sql) for every ```sql block of the runbook; the title is the heading above it, and the
    bold label under that heading when there is one ("Kill Switch: View Events")."""
    path = next(p for p in RUNBOOK_CANDIDATES if p.exists())
    text = path.read_text()
    found = []
    for match in re.finditer(r"```sql\n(.*?)```", text, re.S):
        before = text[: match.start()].rstrip().splitlines()
        heading_at = max((i for i, line in enumerate(before) if line.startswith("#")), default=-1)
        heading = before[heading_at].lstrip("#").strip() if heading_at >= 0 else "query"
        label = next((line.strip().strip("*:").strip() for line in reversed(before[heading_at + 1:])
                      if line.strip().startswith("**")), "")
        title = f"{heading}: {label}" if label else heading
        found.append((title, match.group(1).strip().rstrip(";")))
    return found


# --- data ----------------------------------------------------------------------------------------------

def _fill_defaults(cursor, table: str, given: dict[str, str]) -> dict[str, str]:
    """`given` plus a plain value for every other NOT NULL column without a database default
    (columns other helpers may add to the models must not break the bulk insert)."""
    cursor.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
        "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'", [table])
    plain = {"numeric": "0", "integer": "0", "bigint": "0", "smallint": "0", "boolean": "false", "jsonb": "'{}'",
             "timestamp with time zone": "now()", "date": "current_date", "double precision": "0"}
    columns = dict(given)
    for name, data_type in cursor.fetchall():
        if name not in columns:
            columns[name] = plain.get(data_type, "''")
    return columns


def _insert(cursor, table: str, n: int, columns: dict[str, str]) -> None:
    columns = _fill_defaults(cursor, table, columns)
    names = ", ".join(columns)
    values = ", ".join(columns.values())
    # The bench's own constant expressions, no outside input.
    cursor.execute(f"INSERT INTO {table} ({names}) SELECT {values} FROM generate_series(1, {n}) AS i")  # noqa: S608


def seed(ctx: BenchContext, n: int, *, copies: bool = True) -> None:
    """`n` orders, `n` paper orders (and their venue orders), events, snapshots, performance rows;
    with `copies`, index-less copies of the tables beside them (the baseline)."""
    from django.db import connection, transaction

    span = SPAN_DAYS * 86400
    at = f"now() - make_interval(secs => (i::float8 / {n}) * {span})"  # i = 1 is the newest
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("TRUNCATE fills, paper_orders, paper_venue_orders, orders, positions, circuit_breaker_events, "
                       "kill_switch_events, portfolio_snapshots, agent_performance, agent_equity_buckets, "
                       "agent_equity_progress RESTART IDENTITY CASCADE")
        cursor.execute("SELECT coalesce(max(id), 0) FROM agents")
        first_agent = cursor.fetchone()[0] + 1
        ctx.say(f"  seeding {AGENTS} agents ...")
        _insert(cursor, "agents", AGENTS, {
            "id": f"{first_agent - 1} + i", "name": f"'bench-rq-{int(time.time())}-' || i",
            "strategy": "'trading.strategies.sma_cross.SmaCross'",
            "params": "'{}'", "symbols": "ARRAY['BTC/USDT']", "timeframe": "'1m'", "exchange": "'paper'",
            "feed": "'synthetic'", "mode": "'paper'", "status": "'stopped'", "capital": "10000",
            "tick_seconds": "60", "last_decision": "''", "created_at": "now()", "updated_at": "now()"})
        cursor.execute("SELECT setval(pg_get_serial_sequence('agents', 'id'), (SELECT max(id) FROM agents))")
        agent = f"{first_agent} + (i % {AGENTS})"
        symbol = "(ARRAY['BTC/USDT','ETH/USDT','SOL/USDT','BNB/USDT','XRP/USDT'])[1 + i % 5]"
        side = "(ARRAY['buy','sell'])[1 + i % 2]"
        pnl = "round(((random() - 0.48) * 40)::numeric, 8)"
        ctx.say(f"  seeding {n:,} orders ...")
        _insert(cursor, "orders", n, {
            "client_order_id": "'bench-' || i", "agent_id": agent, "exchange": "'paper'", "mode": "'paper'",
            "symbol": symbol, "side": side, "order_type": "'market'", "quantity": "0.01",
            "reduce_only": "false", "origin": "'strategy'",
            "status": ("CASE WHEN i <= 20 THEN 'submitted' WHEN i % 20 = 0 THEN 'cancelled' "
                       "WHEN i % 20 = 1 THEN 'rejected' ELSE 'executed' END"),
            "filled_quantity": "CASE WHEN i % 20 IN (0, 1) OR i <= 20 THEN 0 ELSE 0.01 END",
            "fee": "0.01", "pnl": f"CASE WHEN i % 20 IN (0, 1) OR i <= 20 THEN 0 ELSE {pnl} END",
            "decision_reason": "'bench'", "reject_reason": "''", "venue_order_id": "'P' || i",
            "created_at": at, "updated_at": f"{at} + make_interval(secs => 0.05 + random() * 0.2)"})
        ctx.say(f"  seeding {n:,} paper orders ...")
        _insert(cursor, "paper_venue_orders", n, {
            "client_order_id": "'bench-' || i", "account": f"'agent-' || {agent}", "symbol": symbol, "side": side,
            "order_type": "'market'", "quantity": "0.01", "filled_quantity": "0.01", "status": "'filled'",
            "reject_reason": "''", "reject_code": "''", "locked_asset": "''", "locked_amount": "0",
            "rested": "false", "created_at": at, "updated_at": at})
        _insert(cursor, "paper_orders", n, {
            "venue_order_id": "i", "trade_id": "'T' || i", "client_order_id": "'bench-' || i",
            "account": f"'agent-' || {agent}", "symbol": symbol, "side": side, "quantity": "0.01",
            "price": "50000", "fee": "0.01", "fee_currency": "'USDT'", "liquidity": "'taker'",
            "slippage_bps": "1", "pnl": pnl, "created_at": at})
        events = max(n // 10, 1000)
        event_at = f"now() - make_interval(secs => (i::float8 / {events}) * {span})"
        ctx.say(f"  seeding {events:,} breaker and kill-switch events, snapshots, {AGENTS} performance rows ...")
        _insert(cursor, "circuit_breaker_events", events, {
            "breaker": "'daily_loss'", "scope": "'global'", "action": "(ARRAY['trip','half_open','close'])[1 + i % 3]",
            "reason": "'bench'", "details": "'{}'", "threshold_value": "100", "actual_value": "120",
            "actor": "'system'", "created_at": event_at})
        _insert(cursor, "kill_switch_events", events, {
            "action": "(ARRAY['activate','deactivate'])[1 + i % 2]", "mode": "'HALT_ONLY'", "reason": "'bench'",
            "actor": "'bench'", "source": "'cli'", "details": "'{}'", "created_at": event_at})
        _insert(cursor, "portfolio_snapshots", events, {
            "equity": "100000", "cash": "50000", "gross_exposure": "50000", "net_exposure": "50000",
            "realized_pnl": "0", "unrealized_pnl": "0", "peak_equity": "100000", "drawdown": "0",
            "open_orders": "0", "positions": "'[]'", "created_at": event_at})
        _insert(cursor, "agent_performance", AGENTS, {
            "agent_id": f"{first_agent - 1} + i", "window_start": "now() - interval '30 days'", "window_end": "now()",
            "trades": "100", "win_rate": "round(random()::numeric, 4)",
            "sharpe_ratio": "round((random() * 4 - 1)::numeric, 4)",
            "total_pnl": pnl, "updated_at": "now()"})
    if copies:
        _copy_without_indexes()


def _copy_without_indexes() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"DROP TABLE IF EXISTS {COPY_PREFIX}{table}")
            cursor.execute(f"CREATE TABLE {COPY_PREFIX}{table} AS SELECT * FROM {table}")  # noqa: S608
        for table in TABLES:
            cursor.execute(f"VACUUM ANALYZE {table}")
            cursor.execute(f"VACUUM ANALYZE {COPY_PREFIX}{table}")


def _drop_copies() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"DROP TABLE IF EXISTS {COPY_PREFIX}{table}")


# --- measuring -----------------------------------------------------------------------------------------

def without_indexes(sql: str) -> str:
    """The query on the index-less copies."""
    return re.sub(r"\b(FROM|JOIN)\s+(" + "|".join(TABLES) + r")\b", lambda m: f"{m.group(1)} {COPY_PREFIX}{m.group(2)}",
                  sql, flags=re.I)


def _explain(sql: str, *, analyze: bool) -> dict:
    from django.db import connection

    options = "ANALYZE, TIMING OFF, FORMAT JSON" if analyze else "FORMAT JSON"
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN ({options}) {sql}")
        plan = cursor.fetchone()[0]
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]


def time_query(sql: str, runs: int) -> float:
    """Median milliseconds the server spends on `sql` (planning + execution, as EXPLAIN ANALYZE
    reports them), after one warm-up run. Server time, not client time: sending the rows and
    turning them into Python objects is the same with or without an index, and would make the
    figure a measure of the client."""
    samples = []
    for run in range(runs + 1):
        result = _explain(sql, analyze=True)
        if run:
            samples.append(result["Planning Time"] + result["Execution Time"])
    return statistics.median(samples)


def indexes_used(sql: str) -> list[str]:
    """Names of the indexes in the plan EXPLAIN gives for `sql`."""
    names: list[str] = []

    def walk(node: dict) -> None:
        if "Index Name" in node:
            names.append(node["Index Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(_explain(sql, analyze=False)["Plan"])
    return names


def run(ctx: BenchContext) -> list[BenchRow]:
    n, runs = (100_000, 3) if ctx.quick else (1_000_000, 7)
    started = time.monotonic()
    seed(ctx, n)
    ctx.say(f"  seeded in {time.monotonic() - started:.0f} s")
    rows = []
    queries = runbook_queries()
    try:
        load = load_note()
        for index, (title, sql) in enumerate(queries, 1):
            ctx.say(f"  [{index}/{len(queries)}] {title}: median of {runs} runs, indexed and index-less ...")
            ours = time_query(sql, runs)
            base = time_query(without_indexes(sql), runs)
            used = indexes_used(sql)
            whole = next((name for name in WHOLE_RELATION if re.search(rf"\b{name}\b", sql)), None)
            if whole:
                index_note, passed = f"no index can help: reads all of {whole}", ours < GOAL_MS
            else:
                index_note, passed = f"index: {', '.join(sorted(set(used))) or 'NONE'}", ours < GOAL_MS and bool(used)
            goal = f"< {GOAL_MS:.0f} ms" + ("" if whole else ", index used")
            rows.append(BenchRow("runbook queries", f"{title} ({n:,} rows/table; {index_note})", ours, base, "ms",
                                 goal, passed, note=load))
    finally:
        _drop_copies()
        clear()
    return rows


def clear() -> None:
    """Leave the book empty for the scenarios after this one, without the seeded agents (a
    portfolio snapshot values every agent: the risk-snapshot scenario must see its own only)."""
    from django.db import connection

    from trading.models import Agent

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE fills, paper_orders, paper_venue_orders, orders, positions, "
                       "portfolio_snapshots, agent_performance, agent_equity_buckets, agent_equity_progress "
                       "RESTART IDENTITY CASCADE")
    Agent.objects.filter(name__startswith="bench-rq-").delete()
