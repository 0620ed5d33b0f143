"""The bench's own Celery tasks never reach production workers."""

from __future__ import annotations

import os
import subprocess
import sys

from tinywindow.runtime import BASE_DIR


def test_bench_tasks_are_routed_to_bench_queues_that_production_workers_do_not_consume():
    from tinywindow.bench import tasks
    from tinywindow.celery import app

    production = {queue.name for queue in app.conf.task_queues}
    for task in (tasks.noop, tasks.hop_first, tasks.hop_second):
        route = app.amqp.router.route(task._get_exec_options(), task.name, (), {}, task)
        assert route["queue"].name.startswith("bench"), (task.name, route["queue"].name)
        assert route["queue"].name not in production


def test_a_production_worker_does_not_import_the_bench_tasks():
    """What a worker imports at start (autodiscovery, CELERY_IMPORTS) leaves the bench module out."""
    code = ("import sys; from tinywindow.celery import app; app.loader.import_default_modules(); "
            "print('trading.tasks.execute_order' in app.tasks, 'tinywindow.bench.tasks' in sys.modules, "
            "sorted(n for n in app.tasks if 'bench' in n))")
    result = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=dict(os.environ), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "True False []"
