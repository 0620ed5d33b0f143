"""Crash points: a test hook that stops a process at one exact step so a test can `kill -9` it there.

The reliability tests (tests/integration/test_faults.py) kill the engine worker at each step of
an order's life — before the venue call, after the venue took the order but before the database
knew, in the middle of recording a partial fill — and check that reconciliation repairs it.
A sleep cannot land a kill on such a step; this hook can:

    TINYWINDOW_CRASH_POINT=order.after_send      the step (see the `crash_point(...)` calls)
    TINYWINDOW_CRASH_KEY=tw-12-abc...            optional: only for this order (client order id)

When the running code reaches that step it logs "crash point <name> reached" and blocks forever,
so the test sees the line and kills the process group. Unset (production), `crash_point` returns
at once: one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

CRASH_POINT_ENV = "TINYWINDOW_CRASH_POINT"
CRASH_KEY_ENV = "TINYWINDOW_CRASH_KEY"


def crash_point(name: str, *, key: str = "") -> None:
    """Hold here forever when the environment names this step (and this key); else return."""
    wanted = os.environ.get(CRASH_POINT_ENV)
    if not wanted or wanted != name:
        return
    wanted_key = os.environ.get(CRASH_KEY_ENV, "")
    if wanted_key and wanted_key != key:
        return
    message = f"crash point {name} reached (key {key or '-'}): holding until killed"
    logger.critical(message)
    sys.stderr.write(message + "\n")  # the test reads the worker's output, whatever the log config
    sys.stderr.flush()
    threading.Event().wait()
