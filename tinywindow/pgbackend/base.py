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

Prepared statements (settings: DB_PREPARED_STATEMENTS) outlive a migration that changes the
columns a statement returns (ALTER COLUMN TYPE, or a column added under a `SELECT *`): PostgreSQL
then refuses the statement ("cached plan must not change result type") on every run, for as
long as the connection lives. The first such error marks the connection to be closed at the end
of its request or task, so one request or task fails instead of every one on that connection.
"""

from __future__ import annotations

import select
import time
from functools import cached_property
from types import TracebackType

from django.db.backends.postgresql import base
from django.db.utils import DatabaseErrorWrapper
from psycopg import errors, pq

STALE_PLAN_MESSAGE = "cached plan must not change result type"


class _ErrorWrapper(DatabaseErrorWrapper):
    def __exit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if (exc_type is not None and issubclass(exc_type, errors.FeatureNotSupported)
                and STALE_PLAN_MESSAGE in str(exc_value)):
            self.wrapper.close_at = time.monotonic()  # Django closes it when the request or task ends
        return super().__exit__(exc_type, exc_value, traceback)


class DatabaseWrapper(base.DatabaseWrapper):
    @cached_property
    def wrap_database_errors(self) -> DatabaseErrorWrapper:
        return _ErrorWrapper(self)

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
