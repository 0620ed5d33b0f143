"""A small process supervisor for `manage.py up`: start roles, watch them, stop them all.

Each role runs in its own session (process group), so a terminal's Ctrl-C reaches only the
supervisor, which then stops the roles in order: SIGTERM to each whole group (a Celery
worker's pool children and gunicorn's workers included), a grace period, then SIGKILL.
Children also get SIGTERM from the kernel if the supervisor itself dies (PR_SET_PDEATHSIG),
so even `kill -9` of `up` leaves no role running.

A role that exits on its own is restarted, at most `max_restarts` times in
`restart_window` seconds; past that the supervisor stops everything and exits non-zero
(a role that keeps crashing needs a human, not a loop).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM this child when the supervisor dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: Ctrl-C and SIGTERM handling still stop the roles


@dataclass
class Role:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    restarts: deque = field(default_factory=deque)
    log_file: object | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the role
        self.log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
        self.process = subprocess.Popen(
            self.argv, cwd=cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=self.log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def poll(self) -> int | None:
        return self.process.poll() if self.process else None

    def signal_group(self, sig: int) -> None:
        if not self.process:
            return
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def group_alive(self) -> bool:
        """True while any process of the role's group (children included) still exists."""
        if not self.process:
            return False
        self.process.poll()  # reap the leader if it exited
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def close_log(self) -> None:
        if self.log_file:
            self.log_file.close()
            self.log_file = None


class Supervisor:
    def __init__(self, roles: list[Role], *, cwd: Path, say: Callable[[str], None], max_restarts: int = 5,
                 restart_window: float = 300.0, grace_seconds: float = 20.0) -> None:
        self.roles = roles
        self.cwd = cwd
        self.say = say
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.grace_seconds = grace_seconds
        self.stop_requested = False

    def request_stop(self, signum: int, _frame) -> None:
        if not self.stop_requested:
            self.say(f"\nreceived {signal.Signals(signum).name}: stopping every role ...")
        self.stop_requested = True

    def start_all(self) -> None:
        for role in self.roles:
            role.start(self.cwd)

    def watch_once(self) -> str | None:
        """Check every role once; restart one that died. Returns an error when it must give up."""
        for role in self.roles:
            code = role.poll()
            if code is None or self.stop_requested:
                continue
            now = time.monotonic()
            while role.restarts and now - role.restarts[0] > self.restart_window:
                role.restarts.popleft()
            if len(role.restarts) >= self.max_restarts:
                return (f"role {role.name} exited with code {code} {self.max_restarts} times in "
                        f"{int(self.restart_window)} s; giving up (log: {role.log_path})")
            role.restarts.append(now)
            self.say(f"role {role.name} exited with code {code}; restarting it (log: {role.log_path})")
            role.signal_group(signal.SIGKILL)  # leftovers of the dead role's group
            role.close_log()
            role.start(self.cwd)
        return None

    def stop_all(self) -> list[str]:
        """Stop every role (reverse start order); returns the names of roles that needed SIGKILL."""
        for role in reversed(self.roles):
            role.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        while time.monotonic() < deadline and any(r.group_alive() for r in self.roles):
            time.sleep(0.1)
        killed = []
        for role in self.roles:
            if role.group_alive():
                killed.append(role.name)
                role.signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(r.group_alive() for r in self.roles):
            time.sleep(0.05)
        for role in self.roles:
            if role.process:
                try:
                    role.process.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
            role.close_log()
        return killed
