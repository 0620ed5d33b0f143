"""The `up` supervisor with real child processes: restart, give up, stop whole groups."""

import os
import sys
import time

from tests.helpers import wait_until
from tinywindow.supervisor import Role, Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# A parent that starts a grandchild in the same group, like a Celery worker's pool.
FAMILY = [sys.executable, "-c",
          "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
          " time.sleep(600)"]
CRASHER = [sys.executable, "-c", "import sys; sys.exit(3)"]


def _role(tmp_path, name, argv):
    return Role(name, argv, dict(os.environ), tmp_path / f"{name}.log")


def test_stop_all_when_roles_have_children_then_every_process_of_every_group_is_gone(tmp_path):
    roles = [_role(tmp_path, "a", FAMILY), _role(tmp_path, "b", SLEEPER)]
    supervisor = Supervisor(roles, cwd=tmp_path, say=lambda m: None, grace_seconds=5)
    supervisor.start_all()
    wait_until(lambda: all(r.group_alive() for r in roles), timeout=10, message="roles started")
    supervisor.stop_all()
    assert not any(r.group_alive() for r in roles)


def test_watch_when_role_exits_then_restarted_with_a_message(tmp_path):
    messages = []
    role = _role(tmp_path, "flaky", CRASHER)
    supervisor = Supervisor([role], cwd=tmp_path, say=messages.append, max_restarts=5)
    supervisor.start_all()
    first_pid = role.pid
    wait_until(lambda: role.poll() is not None, timeout=10, message="the role exits")
    assert supervisor.watch_once() is None
    assert role.pid != first_pid
    assert "role flaky exited with code 3; restarting it" in messages[0]
    supervisor.stop_all()


def test_watch_when_role_keeps_crashing_then_gives_up_with_error(tmp_path):
    role = _role(tmp_path, "broken", CRASHER)
    supervisor = Supervisor([role], cwd=tmp_path, say=lambda m: None, max_restarts=2, restart_window=60)
    supervisor.start_all()
    error = None
    deadline = time.monotonic() + 20
    while error is None and time.monotonic() < deadline:
        if role.poll() is not None:
            error = supervisor.watch_once()
        time.sleep(0.05)
    assert error is not None and "giving up" in error and "broken" in error
    supervisor.stop_all()
