"""Long-running processes take their start-up heap out of the garbage collector's reach
(tinywindow.heap): a full collection walked ~260,000 start-up objects, 130-145 ms in which a
worker ran no tick and a web worker answered no request."""

from __future__ import annotations

import gc
import http.client
import re
import sys

from tests.conftest import wait_for_worker
from tests.helpers import BackgroundProcess, wait_until
from tinywindow.embedded import find_free_port
from tinywindow.heap import freeze_startup_heap
from trading.models import PortfolioSnapshot
from trading.tasks import take_portfolio_snapshot

STARTUP_OBJECTS = 100_000  # a worker's start-up heap is ~260,000 objects; a bare interpreter's ~10,000


def test_freeze_when_called_then_a_full_collection_no_longer_walks_what_was_alive():
    gc.collect()
    walked_before = len(gc.get_objects())  # what a full collection walks: every tracked object
    try:
        frozen = freeze_startup_heap("test")
        assert walked_before > 10_000 and frozen > walked_before * 0.99  # (a few may die in between)
        # Frozen objects still go when nothing refers to them (here: whatever another thread of the
        # test process drops meanwhile), so the count may fall a little, and never rise.
        assert frozen - 100 <= gc.get_freeze_count() <= frozen
        assert len(gc.get_objects()) < walked_before / 10  # only what was made since
        assert freeze_startup_heap("test again") >= frozen  # idempotent: nothing thaws
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def _counts(log: str, pattern: str) -> list[int]:
    return [int(n) for n in re.findall(pattern, log)]


def test_worker_when_started_then_pool_children_inherit_the_frozen_heap_and_still_run_tasks(start_worker):
    worker = start_worker("default", name="heap", concurrency=2, extra_env={"LOG_LEVEL": "DEBUG"})
    wait_for_worker(worker)

    def children_reported() -> bool:
        return len(_counts(worker.log(), r"pool process \d+: (\d+) objects inherited frozen")) >= 2

    wait_until(children_reported, timeout=30, message=f"both pool processes report ({worker.log_path})")
    log = worker.log()
    assert all(n > STARTUP_OBJECTS for n in _counts(log, r"pool process \d+: (\d+) objects inherited frozen"))
    assert all(n > STARTUP_OBJECTS for n in _counts(log, r"before a pool fork: (\d+) start-up objects frozen"))
    assert _counts(log, r"worker main process, ready: (\d+) start-up objects frozen")

    # The frozen heap does not get in the way of work: a pool child takes a risk snapshot.
    take_portfolio_snapshot.delay()
    wait_until(PortfolioSnapshot.objects.exists, timeout=30, message=f"a snapshot taken ({worker.log_path})")


def test_web_worker_when_started_then_the_app_and_urlconf_are_frozen(worker_env, tmp_path):
    port = find_free_port()
    web = BackgroundProcess(
        [sys.executable, "-m", "gunicorn", "tinywindow.wsgi:application", "--config",
         "python:tinywindow.gunicorn_conf", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        env={**worker_env, "LOG_LEVEL": "DEBUG"}, log_path=tmp_path / "web.log")
    try:
        def answers() -> bool:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/")
                return conn.getresponse().status in (200, 401, 403)
            except OSError:
                return False

        wait_until(answers, timeout=60, message=f"gunicorn answers ({web.log_path})")
        frozen = _counts(web.log(), r"web worker \d+: (\d+) start-up objects frozen")
        assert frozen and frozen[0] > STARTUP_OBJECTS, web.log()
    finally:
        web.stop()
