"""API: `GET /api/status` and `GET /api/orders` at 16 concurrent connections, req/s and p99.

The production web server: gunicorn with tinywindow/gunicorn_conf.py and the `up` command's
worker count (2 workers of 4 threads), started as a real process on a free loopback port,
access log on. One flag is the bench's own: each worker takes at most half of the load
generator's 16 keep-alive connections (`--worker-connections 8`). Without it, whichever worker
is first to accept takes all 16 at the start of a run and keeps them, the other idles, and a
run measures half the server or all of it by chance (the bare view read 1,000 or 2,800 req/s
from one run to the next on one server); many independent clients spread evenly anyway.
Its settings are production's plus one URL (tinywindow/bench/settings.py and urls.py,
loaded only by this process): `/bench/bare`, a plain Django JSON view — same server, same
settings, same middleware, no DRF, no database. That view is the baseline.

The book is seeded first (tinywindow.bench.runbook_queries.seed: orders over a year, paper
trades, events, a snapshot a minute), so `/api/orders` pages through a realistic table
(its first page, by cursor) and `/api/status` reads real breaker, snapshot and open-order state. Clients
authenticate with a viewer's token, as a dashboard or script would; the throttle rates are
raised out of reach. The throttle still counts every request in Redis, in leases of 1 % of the
rate (tinywindow.throttling): out of reach that is one Redis call per process per minute, at
the default rate one per 60 requests, about 2 µs a request, which the bench leaves out.

Load generator: wrk (Debian's package; .ci/run installs it). It is written in C on epoll, so
on a 2-core machine it takes a small, equal share of CPU from both targets and the server, not
the client, is what gets measured; a Python client would need most of a core just to keep 16
connections busy, which would compress the ratio towards 1. Each target gets a warm-up, then
the bare view and TinyWindow's endpoints take turns, ten rounds of 3 s each, and the figures are
the medians over the rounds (req/s and p99). Goal (issue 10): each endpoint at least 33 % of the
bare view's req/s.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request

from tinywindow.bench.core import BenchContext, BenchProcess, BenchRow, load_note, wait_for
from tinywindow.embedded import find_free_port

CONNECTIONS = 16
WEB_WORKERS = 2  # `manage.py up`'s default
GOAL = 0.33
TARGETS = {"GET /api/status": "/api/status", "GET /api/orders": "/api/orders/"}
BARE = "/bench/bare"
OUT_OF_REACH = "1000000000/minute"


class WebServer(BenchProcess):
    """gunicorn serving TinyWindow with the bench's settings, in its own process group."""

    def __init__(self, log_dir, port: int) -> None:
        self.port = port
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="tinywindow.bench.settings", API_THROTTLE_ANON=OUT_OF_REACH,
                   API_THROTTLE_USER=OUT_OF_REACH)
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tw-bench-web-metrics-"))
        argv = [sys.executable, "-m", "gunicorn", "tinywindow.wsgi:application", "--config",
                "python:tinywindow.gunicorn_conf", "--bind", f"127.0.0.1:{port}", "--workers", str(WEB_WORKERS),
                "--worker-connections", str(CONNECTIONS // WEB_WORKERS),
                "--access-logfile", str(log_dir / "gunicorn-access.log")]
        super().__init__(argv, log_path=log_dir / "gunicorn.log", env=env)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url(BARE), timeout=2) as response:  # noqa: S310 - http on loopback
                    return response.status == 200
            except OSError:
                return False

        wait_for(answers, timeout=60, interval=0.1, what="gunicorn to answer")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(url: str, *, seconds: int, token: str) -> tuple[float, float, int]:
    """(req/s, p99 ms, requests) of `url` at CONNECTIONS connections for `seconds`. Raises on any
    error answer or socket error: a benchmark of failing requests measures nothing."""
    argv = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "10s",
            "-H", f"Authorization: Token {token}", url]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = result.stdout
    if result.returncode != 0 or "Non-2xx or 3xx responses" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk {url} failed:\n{out}\n{result.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, p99, requests


def _viewer_token() -> str:
    from django.contrib.auth.models import Group, User
    from rest_framework.authtoken.models import Token

    user, _ = User.objects.get_or_create(username="bench-viewer")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    return Token.objects.get_or_create(user=user)[0].key


def run(ctx: BenchContext) -> list[BenchRow]:
    from django.db import connection

    from tinywindow.bench import runbook_queries
    from trading.services.snapshots import portfolio_snapshot_take

    if shutil.which("wrk") is None:
        raise RuntimeError("the api scenario needs wrk: apt-get install wrk (.ci/run installs it)")
    # Many short rounds, each target in turn, and the median of each: these machines are shared,
    # and a burst of a neighbour's load that lands on one 10 s run moved the ratio by half.
    n, seconds, rounds, warm = (20_000, 1, 2, 1) if ctx.quick else (200_000, 3, 10, 3)
    runbook_queries.seed(ctx, n, copies=False)
    portfolio_snapshot_take()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    token = _viewer_token()
    server = WebServer(ctx.log_dir, find_free_port())
    paths = {"bare": BARE, **TARGETS}
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in paths}
    try:
        server.wait_ready()
        ctx.say(f"  gunicorn ({WEB_WORKERS} workers) on :{server.port}; warm-up {warm} s per target ...")
        for path in paths.values():
            wrk(server.url(path), seconds=warm, token=token)
        load = load_note()
        for round_ in range(1, rounds + 1):
            ctx.say(f"  round {round_}/{rounds}: {', '.join(paths)}, {seconds} s each at {CONNECTIONS} connections "
                    f"({load_note()})")
            for name, path in paths.items():
                results[name].append(wrk(server.url(path), seconds=seconds, token=token))
    finally:
        server.stop()
        runbook_queries.clear()

    def total(name: str) -> tuple[float, float]:
        runs = results[name]
        return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)

    bare_rps, bare_p99 = total("bare")
    rows = []
    for name in TARGETS:
        rps, p99 = total(name)
        rows.append(BenchRow("api", f"{name}: req/s at {CONNECTIONS} connections, gunicorn {WEB_WORKERS} workers, "
                             f"{n:,} orders (baseline: bare Django JSON view, same server)", rps, bare_rps, "req/s",
                             f"≥ {GOAL:.0%} of bare", rps >= GOAL * bare_rps, note=load))
        rows.append(BenchRow("api", f"{name}: p99 latency at {CONNECTIONS} connections (baseline: bare view)", p99,
                             bare_p99, "ms", "–", None, note=load))
    return rows
