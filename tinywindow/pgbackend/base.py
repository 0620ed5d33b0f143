"""Django's PostgreSQL backend with a health check that costs no round trip.

CONN_HEALTH_CHECKS makes Django check a reused connection before the first query of every
request and every Celery task, so a web worker or an engine survives a PostgreSQL restart
instead of failing one request or task per stale connection. Django checks with `SELECT 1`:
one round trip per request or task, which the API benchmark and the order path both paid
(docs/performance.md). A server that went away has closed the socket (a restart, a kill, an
administrator's `pg_terminate_backend` all send an error message and a FIN), so the socket of
an idle connection has something to read; a healthy idle connection has nothing. The check
here looks at the socket without waiting (`select` with a zero timeout) and falls back to
Django's `SELECT 1` only when there is something to read.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self) -> None:
        if self.connection is None or not self.health_check_enabled or self.health_check_done:
            return
        if not self._idle_connection_usable():
            self.close()
        self.health_check_done = True

    def _idle_connection_usable(self) -> bool:
        pgconn = self.connection.pgconn
        if pgconn.status != pq.ConnStatus.OK:
            return False
        try:
            readable, _, _ = select.select([pgconn.socket], [], [], 0)
        except (OSError, ValueError):  # the socket is gone
            return False
        return not readable or self.is_usable()  # something arrived: a notice, or the end; ask the server
