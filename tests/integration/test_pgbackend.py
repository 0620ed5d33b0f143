"""tinywindow.pgbackend: the connection health check that needs no round trip."""

import select

import pytest
from django.db import connection, connections

from tests.helpers import wait_until
from tinywindow.pgbackend.base import DatabaseWrapper

pytestmark = pytest.mark.django_db(transaction=True)


def _next_request() -> None:
    """What Django does before the first query of a request or task on a reused connection."""
    connection.health_check_done = False
    connection.close_if_health_check_failed()


def test_health_check_when_server_ended_the_connection_then_closed_and_next_query_reconnects():
    assert isinstance(connections["default"], DatabaseWrapper) and connection.health_check_enabled
    connection.ensure_connection()
    stale = connection.connection
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:  # what a PostgreSQL restart does to every connection
            cursor.execute("SELECT pg_terminate_backend(%s)", [stale.info.backend_pid])
    finally:
        other.close()
    wait_until(lambda: select.select([stale.pgconn.socket], [], [], 0)[0], timeout=10, interval=0.01,
               message="the server's end of the connection reached the socket")

    _next_request()

    assert connection.connection is None  # closed, not handed to the request
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert connection.connection is not stale


def test_health_check_when_connection_healthy_then_kept_without_asking_the_server(monkeypatch):
    connection.ensure_connection()
    kept = connection.connection

    def no_round_trip(self):
        raise AssertionError("SELECT 1 sent for a healthy idle connection")

    monkeypatch.setattr(DatabaseWrapper, "is_usable", no_round_trip)
    _next_request()
    assert connection.connection is kept and connection.health_check_done
