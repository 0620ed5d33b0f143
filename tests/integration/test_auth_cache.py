"""API token rows kept per web process (tinywindow.auth_cache).

A token's account row is read once, then served from the process while its Redis listener is
subscribed; any change to a token, user, group or membership drops it, in this process at once
and in a real gunicorn process through Redis; a change no signal reports is bounded by
AUTH_CACHE_SECONDS; and while Redis cannot be reached nothing is kept.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from tests.desk import REMOTE, make_role_users
from tests.helpers import BackgroundProcess, wait_until
from tinywindow.auth_cache import TOKEN_ROWS, TokenRowCache
from tinywindow.embedded import find_free_port, start_redis


def _token_reads(queries: CaptureQueriesContext) -> int:
    return sum(Token._meta.db_table in query["sql"] for query in queries.captured_queries)


def _status(client: Client) -> tuple[int, int]:
    """(HTTP status of GET /api/status, token reads it made)."""
    with CaptureQueriesContext(connection) as queries:
        code = client.get("/api/status").status_code
    return code, _token_reads(queries)


@pytest.fixture
def viewer(db) -> tuple[object, Token, Client]:
    users = make_role_users()
    token = Token.objects.create(user=users["viewer"])
    TOKEN_ROWS.epoch()  # starts this process's listener
    wait_until(lambda: TOKEN_ROWS.listening, timeout=10, interval=0.01, message="auth cache listener subscribed")
    return users["viewer"], token, Client(REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION=f"Token {token.key}")


def test_a_token_is_read_from_the_database_once_then_from_the_cache(viewer):
    _, _, client = viewer

    assert _status(client) == (200, 1)
    assert _status(client) == (200, 0)
    assert _status(client) == (200, 0)


def _delete_token(user, token) -> None:
    token.delete()


def _deactivate(user, token) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


def _leave_viewer_group(user, token) -> None:
    user.groups.remove(Group.objects.get(name="viewer"))


def _rename_viewer_group(user, token) -> None:
    group = Group.objects.get(name="viewer")
    group.name = "former-viewers"
    group.save()


def _delete_user(user, token) -> None:
    user.delete()


@pytest.mark.parametrize(("change", "expected"), [
    (_delete_token, 401), (_deactivate, 401), (_delete_user, 401), (_leave_viewer_group, 403),
    (_rename_viewer_group, 403),
])
def test_a_change_to_the_account_is_seen_by_the_next_request(viewer, change: Callable, expected: int):
    user, token, client = viewer
    assert _status(client) == (200, 1)
    assert _status(client) == (200, 0)  # cached

    change(user, token)

    code, reads = _status(client)
    assert (code, reads) == (expected, 1)


def test_a_change_without_a_signal_lasts_at_most_auth_cache_seconds(viewer, settings):
    user, _, client = viewer
    assert _status(client) == (200, 1)
    type(user).objects.filter(pk=user.pk).update(is_active=False)  # no signal: the cache cannot know

    assert _status(client) == (200, 0)  # the documented bound: until the entry is older than the setting
    settings.AUTH_CACHE_SECONDS = 0.000_001
    assert _status(client) == (401, 1)


def test_with_the_cache_off_every_request_reads_the_database(viewer, settings):
    settings.AUTH_CACHE_SECONDS = 0
    _, _, client = viewer

    assert _status(client) == (200, 1)
    assert _status(client) == (200, 1)


def test_an_unknown_token_is_never_kept(viewer):
    client = Client(REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION="Token " + "0" * 40)

    assert _status(client) == (401, 1)
    assert _status(client) == (401, 1)


def test_nothing_is_kept_while_redis_is_down_and_a_reconnect_starts_empty(tmp_path):
    port = find_free_port()
    server = None
    # The server's own port once it runs: `start_redis` takes another when `port` was taken meanwhile.
    cache = TokenRowCache(redis_url=lambda: f"redis://127.0.0.1:{server.port if server else port}/0")
    try:
        # No Redis yet, so the listener cannot subscribe and nothing is kept. (With a server already
        # running, the listener could subscribe before the put: a race, not a test.)
        cache.put("k", ("row",), cache.epoch())
        assert cache.get("k") is None
        server = start_redis(tmp_path / "redis", preferred_port=port)
        wait_until(lambda: cache.listening, timeout=30, interval=0.05, message="listener subscribed")
        cache.put("k", ("row",), cache.epoch())
        assert cache.get("k") == ("row",)

        server.stop()
        wait_until(lambda: not cache.listening, timeout=10, interval=0.01, message="listener sees Redis gone")
        assert cache.get("k") is None
        cache.put("k", ("row",), cache.epoch())
        assert cache.get("k") is None

        server = start_redis(tmp_path / "redis", preferred_port=port)
        wait_until(lambda: cache.listening, timeout=30, interval=0.05, message="listener back")
        assert cache.get("k") is None  # what was missed meanwhile is unknown: start empty
        epoch = cache.epoch()
        cache.forget()  # a change between the database read and the put
        cache.put("k", ("row",), epoch)
        assert cache.get("k") is None
    finally:
        cache.close()
        if server is not None:
            server.stop()


def _get(port: int, path: str, token: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _hits(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('tinywindow_api_token_cache_total{result="hit"}'))


@pytest.mark.django_db(transaction=True)
def test_gunicorn_drops_a_cached_token_when_another_process_changes_the_account(worker_env, tmp_path):
    viewer = make_role_users()["viewer"]
    token = Token.objects.create(user=viewer).key
    port = find_free_port()
    web = BackgroundProcess([sys.executable, "-m", "gunicorn", "tinywindow.wsgi", "-b", f"127.0.0.1:{port}",
                             "-w", "1", "--threads", "2"], env=worker_env, log_path=tmp_path / "web.log")
    try:
        # Requests until the server answers one from its cache (its listener subscribes after the first).
        wait_until(lambda: _get(port, "/api/status", token) == 200 and _hits(port) >= 1, timeout=60,
                   message=f"gunicorn serving the token from its cache ({web.log_path})")

        type(viewer).objects.filter(pk=viewer.pk).update(is_active=False)  # no signal
        assert _get(port, "/api/status", token) == 200  # still cached: nothing told the server

        Group.objects.get(name="operator").save()  # any account change is published after its commit
        wait_until(lambda: _get(port, "/api/status", token) == 401, timeout=10, interval=0.01,
                   message="the server dropped the row and read the inactive user")
    finally:
        web.stop()
