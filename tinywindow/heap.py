"""The start-up heap of a long-running process, taken out of the garbage collector's reach.

After start-up a worker holds ~260,000 objects (Django, Celery, DRF, the task modules) that live
as long as the process. CPython's full collection walks every one of them: 130-145 ms on a
2-core machine here, during which the process runs no tick, sends no order, hands off no message
and answers no request (docs/performance.md, "Garbage collection"). Frozen (gc.freeze), they are
never walked again and a full collection takes well under a millisecond; what is made afterwards
is collected as before, and any object still goes as soon as nothing refers to it.

Used by tinywindow.celery_signals (before a prefork pool forks a child, so the children inherit
it — CPython's advice for fork servers, since the collector would otherwise also write to every
object's header and unshare the pages — and in a worker's main process once it is ready) and by
tinywindow.gunicorn_conf (each web worker, once the app and its URLconf are loaded).
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def freeze_startup_heap(process: str) -> int:
    """Collect what start-up left behind, freeze every object alive now, return how many are frozen.
    Cheap after the first call in a process: the collection no longer walks the frozen objects."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug("%s: %d start-up objects frozen out of garbage collection", process, frozen)
    return frozen
