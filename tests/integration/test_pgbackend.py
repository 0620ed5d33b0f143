"""tinywindow.pgbackend: the connection health check that needs no round trip."""

import json
import os
import select
import subprocess
import sys

import pytest
from django.db import NotSupportedError, connection, connections

from tests.helpers import ROOT, wait_until
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


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_repeated_query_when_run_in_one_connection_then_prepared_once_by_the_server():
    from tinywindow.status import _status_sql, system_status

    connection.close()
    for _ in range(3):
        system_status()
    assert not any("agent_counts" in sql for sql in _prepared_statements())  # a few runs: planned each time

    for _ in range(5):
        system_status()
    prepared = [sql for sql in _prepared_statements() if "agent_counts" in sql]
    assert len(prepared) == 1  # prepared once, then only executed
    assert "$1" in prepared[0] and "%s" not in prepared[0]  # server-side binding: values travel apart
    assert prepared[0].split() == _status_sql().replace("%s", "$1", 1).replace("%s", "$2", 1).split()


def test_prepared_statements_when_switched_off_then_django_binds_on_the_client():
    script = ("import django, json; django.setup(); from django.conf import settings; "
              "print(json.dumps(settings.DATABASES['default']['OPTIONS']))")
    options = {}
    for value in ("false", "true"):
        env = dict(os.environ, DB_PREPARED_STATEMENTS=value, DJANGO_SETTINGS_MODULE="tinywindow.settings")
        result = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                                timeout=60, check=True)
        options[value] = json.loads(result.stdout.strip().splitlines()[-1])
    assert "server_side_binding" not in options["false"] and "prepare_threshold" not in options["false"]
    assert options["true"]["server_side_binding"] is True and options["true"]["prepare_threshold"] == 5


def test_prepared_statement_when_a_migration_changes_its_result_then_connection_recycled_after_one_failure():
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("CREATE TABLE migrated_meanwhile (id integer)")
            cursor.execute("INSERT INTO migrated_meanwhile VALUES (1)")
        connection.close()
        for _ in range(7):  # past psycopg's prepare threshold: the server holds the plan
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM migrated_meanwhile WHERE id = %s", [1])
        held = connection.connection
        with other.cursor() as cursor:  # what a deploy's migration does while the processes run
            cursor.execute("ALTER TABLE migrated_meanwhile ADD COLUMN added integer")

        stale_plan = pytest.raises(NotSupportedError, match="cached plan must not change result type")
        with stale_plan, connection.cursor() as cursor:
            cursor.execute("SELECT * FROM migrated_meanwhile WHERE id = %s", [1])
        connection.close_if_unusable_or_obsolete()  # what Django does when the request or task ends

        assert connection.connection is None or connection.connection is not held
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM migrated_meanwhile WHERE id = %s", [1])
            assert cursor.fetchall() == [(1, None)]
    finally:
        with other.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS migrated_meanwhile")
        other.close()
