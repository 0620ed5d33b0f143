"""`python manage.py soak`: many agents ticking through real workers for a bounded time (issue 9 "Load").

Like `bench`, it runs in a throw-away database and its own Redis database (BENCH_REDIS_DB), so a
running TinyWindow is not disturbed. See tinywindow/soak.py for what is checked and measured.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.core.management.base import CommandError

from tinywindow.management.commands.bench import Command as BenchCommand


def _positive(kind):
    def parse(raw: str):
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"not a number: {raw!r}") from None
        if value <= 0:
            raise ValueError(f"must be positive, got {raw!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


class Command(BenchCommand):
    help = ("Soak test: AGENTS agents each tick every INTERVAL seconds (sent as beat sends them, expiring after one "
            "interval) through real strategy and engine worker processes, for MINUTES (or SECONDS); then checks "
            "that no tick was lost except by expiry, no order was made twice and every order is final, and prints "
            "tick throughput and tick → fill latency (p50/p99). Runs in a throw-away database. Exit 1 when a check "
            "fails. Example: python manage.py soak --agents 200 --minutes 10")

    def add_arguments(self, parser):
        parser.add_argument("--agents", type=_positive(int), default=200, help="Agents (default 200).")
        length = parser.add_mutually_exclusive_group()
        length.add_argument("--minutes", type=_positive(float), default=None, help="Run length in minutes.")
        length.add_argument("--seconds", type=_positive(float), default=None,
                            help="Run length in seconds (default 60: the short form).")
        parser.add_argument("--interval", type=_positive(int), default=5,
                            help="Seconds between two ticks of one agent (default 5, as the demo agents).")
        parser.add_argument("--strategy-workers", type=_positive(int), default=1,
                            help="Strategy worker processes (default 1).")
        parser.add_argument("--concurrency", type=_positive(int), default=3,
                            help="Pool processes per strategy worker (default 3).")
        parser.add_argument("--engine-concurrency", type=_positive(int), default=2,
                            help="Pool processes of the engine worker (default 2).")
        parser.add_argument("--inner", action="store_true", help="(internal) run inside the soak database.")

    def handle(self, *args, **opts):
        opts["seconds"] = opts["minutes"] * 60 if opts["minutes"] else (opts["seconds"] or 60)
        if opts["inner"]:
            return self._run_soak(opts)
        return self._run_outer(opts)

    def inner_args(self, opts) -> list[str]:
        return ["soak", "--inner", "--agents", str(opts["agents"]), "--seconds", str(opts["seconds"]),
                "--interval", str(opts["interval"]), "--strategy-workers", str(opts["strategy_workers"]),
                "--concurrency", str(opts["concurrency"]), "--engine-concurrency", str(opts["engine_concurrency"])]

    def _run_soak(self, opts) -> None:
        from tinywindow.soak import soak_run

        report = soak_run(agents=opts["agents"], seconds=opts["seconds"], interval=opts["interval"],
                          strategy_workers=opts["strategy_workers"], strategy_concurrency=opts["concurrency"],
                          engine_concurrency=opts["engine_concurrency"], say=self._say,
                          log_dir=Path(tempfile.mkdtemp(prefix="tinywindow-soak-logs-")),
                          drain_timeout=max(120, opts["interval"] * 10))
        self.stdout.write("\n" + report.table())
        if not report.ok:
            raise CommandError("soak failed a check (see the table)")
