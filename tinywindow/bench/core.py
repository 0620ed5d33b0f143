"""What every benchmark scenario shares: a result row, worker processes, waiting, timing.

Scenarios run inside a dedicated database that `manage.py bench` creates and drops, with
real Celery worker processes started with the production settings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tinywindow.runtime import BASE_DIR


@dataclass
class BenchRow:
    scenario: str
    measure: str
    tinywindow: float | None
    baseline: float | None
    unit: str
    goal: str
    passed: bool | None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.tinywindow is None or not self.baseline:
            return None
        return self.tinywindow / self.baseline


@dataclass
class BenchContext:
    quick: bool
    say: Callable[[str], None]
    log_dir: Path


class BenchProcess:
    """A child process of the bench in its own process group, its output in `log_path`; `stop` ends the group."""

    def __init__(self, argv: list[str], *, log_path: Path, env: dict) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()


class Worker(BenchProcess):
    """A real `celery worker` process with the production settings, in its own process group."""

    def __init__(self, queues: str, *, name: str, concurrency: int, log_dir: Path, extra_env: dict | None = None,
                 pool: str = "prefork", include: str | None = None) -> None:
        env = dict(os.environ, **(extra_env or {}))
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tw-bench-metrics-"))
        argv = [sys.executable, "-m", "celery", "-A", "tinywindow", "worker", "-Q", queues, "-n", f"{name}@%h",
                "-c", str(concurrency), "-P", pool, "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
        if include:  # extra task modules (the bench's own tasks: production workers never import them)
            argv += ["--include", include]
        super().__init__(argv, log_path=log_dir / f"worker-{name}.log", env=env)

    def wait_ready(self, timeout: float = 60) -> None:
        from celery import current_app

        hostname = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log_path}")
            replies = current_app.control.ping(timeout=0.5) or []
            names = [next(iter(r)) for r in replies]
            hostname = next((n for n in names if n.split("@")[0] in self.log_path.stem), None)
            if hostname:
                return
        raise RuntimeError(f"worker not ready after {timeout}s; see {self.log_path}")


def reset_book() -> None:
    """An empty book, the kill switch off and every breaker closed (state and Redis mirror)."""
    from django.db import connection

    from safety.services.breakers import breaker_reset
    from safety.services.kill_switch import kill_switch_disengage

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE fills, paper_orders, paper_venue_orders, orders, positions RESTART IDENTITY CASCADE"
        )
    kill_switch_disengage(actor="bench", source="bench")
    breaker_reset(reason="benchmark setup", actor="bench", source="bench")


def load_note() -> str:
    """The machine's load when a measurement starts: shared 2-core machines are noisy, say how noisy."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return ""
    return f"load {one:.1f}/{five:.1f}"


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.005, what: str = "") -> float:
    """Poll until `predicate()` is truthy; returns when it became so (time.perf_counter())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
