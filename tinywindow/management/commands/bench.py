"""`python manage.py bench`: measure TinyWindow against baselines in the same run.

It creates a throw-away database (on the configured PostgreSQL, or an embedded one when none
answers) and uses its own Redis database number (env BENCH_REDIS_DB, default 12; flushed before
and after), so a running TinyWindow is not disturbed;
scenarios start real Celery worker processes with the production settings.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from tinywindow import embedded
from tinywindow.runtime import BASE_DIR

SCENARIOS = {
    "kill_switch": "tinywindow.bench.kill_switch",
    "order_throughput": "tinywindow.bench.order_throughput",
    "tick_to_fill": "tinywindow.bench.tick_to_fill",
    "api": "tinywindow.bench.api",
    "runbook_queries": "tinywindow.bench.runbook_queries",
    "risk_snapshot": "tinywindow.bench.risk_snapshot",
    "agent_performance": "tinywindow.bench.agent_performance",
    "agent_scale": "tinywindow.bench.agent_scale",
    "backtest": "tinywindow.bench.backtest",
}
# The Redis database number the bench uses (and flushes) on the configured Redis server.
DEFAULT_BENCH_REDIS_DB = 12


def _with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def _pg(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


class Command(BaseCommand):
    help = ("Run the benchmarks and print a table (scenario, TinyWindow, baseline, ratio, goal, pass/miss); "
            "the table is also written to docs/benchmarks.md. Scenarios: " + ", ".join(SCENARIOS))

    def add_arguments(self, parser):
        parser.add_argument("--quick", action="store_true", help="Small sizes: the whole run in about 2 minutes.")
        parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), default=None,
                            help="Run only this scenario (repeatable).")
        parser.add_argument("--output", default=str(BASE_DIR / "docs" / "benchmarks.md"),
                            help="Where to write the table (default docs/benchmarks.md); '-' for none.")
        parser.add_argument("--inner", action="store_true", help="(internal) run inside the bench database.")

    def handle(self, *args, **opts):
        if opts["inner"]:
            return self._run_inner(opts)
        return self._run_outer(opts)

    # --- outer: a fresh database and Redis db, then the scenarios in a child process ---------------
    def _run_outer(self, opts) -> None:
        servers = []
        tmp = None
        database_url, redis_url = settings.DATABASE_URL, settings.REDIS_URL
        try:
            try:
                psycopg.connect(_pg(_with_path(database_url, "/postgres")), connect_timeout=3).close()
                redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
            except (psycopg.OperationalError, redis.RedisError):
                self.stdout.write("no PostgreSQL/Redis answering: starting embedded servers for the benchmark")
                tmp = Path(tempfile.mkdtemp(prefix="tinywindow-bench-"))
                servers = [embedded.start_postgres(tmp / "postgres", preferred_port=embedded.find_free_port()),
                           embedded.start_redis(tmp / "redis", preferred_port=embedded.find_free_port())]
                database_url, redis_url = servers[0].url, servers[1].url
            name = f"tinywindow_bench_{uuid.uuid4().hex[:8]}"
            admin_url = _pg(_with_path(database_url, "/postgres"))
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            bench_redis = _with_path(redis_url, f"/{self._redis_db()}")
            redis.Redis.from_url(bench_redis).flushdb()
            env = dict(os.environ, DATABASE_URL=_with_path(database_url, f"/{name}"), REDIS_URL=bench_redis,
                       CELERY_BROKER_URL=bench_redis, CELERY_RESULT_BACKEND=bench_redis, LOG_LEVEL="WARNING",
                       TINYWINDOW_VAR_DIR=str(Path(tempfile.mkdtemp(prefix="tinywindow-bench-var-"))))
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            try:
                self.stdout.write(f"bench database {name}: migrating ...")
                self._run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env)
                self._run([sys.executable, "manage.py", "bootstrap"], env, quiet=True)
                self._run([sys.executable, "manage.py", *self.inner_args(opts)], env)
            finally:
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                redis.Redis.from_url(bench_redis).flushdb()
        finally:
            for server in reversed(servers):
                server.stop()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def inner_args(self, opts) -> list[str]:
        """The command line run inside the throw-away database (`manage.py soak` reuses the rest)."""
        argv = ["bench", "--inner", "--output", opts["output"]]
        argv += ["--quick"] if opts["quick"] else []
        for only in opts["only"] or []:
            argv += ["--only", only]
        return argv

    @staticmethod
    def _redis_db() -> int:
        value = os.environ.get("BENCH_REDIS_DB", str(DEFAULT_BENCH_REDIS_DB))
        try:
            number = int(value)
        except ValueError:
            raise CommandError(f"BENCH_REDIS_DB must be a Redis database number, got {value!r}") from None
        if number < 0:
            raise CommandError(f"BENCH_REDIS_DB must be a Redis database number, got {value!r}")
        return number

    def _run(self, argv: list[str], env: dict, *, quiet: bool = False) -> None:
        result = subprocess.run(argv, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE if quiet else None)
        if result.returncode != 0:
            raise CommandError(f"{' '.join(argv[1:4])} failed with exit code {result.returncode}")

    # --- inner: run the scenarios, print and write the table --------------------------------------
    def _run_inner(self, opts) -> None:
        import importlib

        from tinywindow.bench.core import BenchContext

        names = opts["only"] or list(SCENARIOS)
        log_dir = Path(tempfile.mkdtemp(prefix="tinywindow-bench-logs-"))
        ctx = BenchContext(quick=opts["quick"], say=self._say, log_dir=log_dir)
        rows = []
        started = time.monotonic()
        for index, name in enumerate(names, 1):
            self._say(f"[{index}/{len(names)}] {name} ...")
            module = importlib.import_module(SCENARIOS[name])
            rows.extend(module.run(ctx))
        table = self._table(rows)
        self.stdout.write("\n" + table)
        self.stdout.write(f"\n{len(rows)} measurements in {time.monotonic() - started:.0f} s (worker logs: {log_dir})")
        if opts["output"] != "-":
            self._write(Path(opts["output"]), table, quick=opts["quick"])
        if any(r.tinywindow is None for r in rows):
            raise CommandError("a scenario produced no number")

    def _say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()

    @staticmethod
    def _table(rows) -> str:
        def fmt(value, unit=""):
            if value is None:
                return "–"
            return f"{value:,.3f} {unit}".strip() if value < 100 else f"{value:,.0f} {unit}".strip()

        lines = ["| scenario | measure | TinyWindow | baseline | ratio | goal | result |",
                 "|---|---|---|---|---|---|---|"]
        for r in rows:
            result = "–" if r.passed is None else ("pass" if r.passed else "MISS")
            ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "–"
            note = f" ({r.note})" if r.note else ""
            lines.append(f"| {r.scenario} | {r.measure}{note} | {fmt(r.tinywindow, r.unit)} | "
                         f"{fmt(r.baseline, r.unit)} | {ratio} | {r.goal} | {result} |")
        return "\n".join(lines)

    @staticmethod
    def _write(path: Path, table: str, *, quick: bool) -> None:
        import celery
        import django

        cpu = "unknown"
        try:
            cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        with psycopg.connect(_pg(settings.DATABASE_URL)) as conn:
            pg_version = conn.execute("SHOW server_version").fetchone()[0]
        redis_version = redis.Redis.from_url(settings.REDIS_URL).info().get("redis_version", "?")
        header = (
            "# Benchmarks\n\n"
            f"Written by `python manage.py bench{' --quick' if quick else ''}` on "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
            f"Machine: {os.cpu_count()} cores, {cpu}; {platform.platform()}. Python {platform.python_version()}, "
            f"Django {django.get_version()}, Celery {celery.__version__}, PostgreSQL {pg_version}, "
            f"Redis {redis_version}.\n\n"
            "Ratios compare TinyWindow with a baseline measured in the same run (these machines are shared "
            "and noisy: absolute numbers drift, ratios hold). Where the time goes in the scenarios that "
            "miss their goal: docs/performance.md.\n\n"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + table + "\n")
