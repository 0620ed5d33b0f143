"""The embedded PostgreSQL and Redis really start, serve, stop and keep their data.

No Django here: these servers are what Django's database comes from, so the tests talk to them
with psycopg / redis-py directly. Every test works in its own fresh directory (see `server_dir`)
and on a free port, so a system PostgreSQL or Redis on 5432/6379 does not interfere.
"""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from tinywindow import embedded
from tinywindow.embedded import (
    EmbeddedServer,
    EmbeddedServerError,
    find_free_port,
    pick_port,
    port_is_free,
    postgres_bin_dir,
    redis_bin_dir,
    start_postgres,
    start_redis,
    tool_bin_dirs,
)
from tinywindow.exceptions import ConfigurationError


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        time.sleep(0.05)
    return True


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def clean_redis() -> None:
    """Replaces tests/conftest.py's autouse flush of the suite's shared Redis for this module.

    These tests start and talk to their own servers only; the shared flush needs Django settings,
    and this module must run without Django (`-p no:django`, DJANGO_SETTINGS_MODULE unset).
    """


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A fresh directory for one test's server data, removed afterwards.

    Not tmp_path: as root, PostgreSQL runs as the `pgserver` user, which must traverse every
    parent of its data directory, and every pytest session that starts on this machine resets
    /tmp/pytest-of-<user> to mode 0700 (pytest's own safety check). A concurrent session would
    then lock our postmaster out of its data in the middle of a test.
    """
    path = Path(tempfile.mkdtemp(prefix="tw-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def started(server_dir: Path) -> Iterator[list[EmbeddedServer]]:
    """Servers a test starts; stopped even when the test fails (and before server_dir goes)."""
    servers: list[EmbeddedServer] = []
    yield servers
    for server in reversed(servers):
        server.stop()


def pg_isready(server: EmbeddedServer) -> int:
    return subprocess.run(
        [str(postgres_bin_dir() / "pg_isready"), "-h", server.host, "-p", str(server.port), "-t", "5"],
        check=False,  # the exit code is the answer
        capture_output=True,
        timeout=30,
    ).returncode


# ---------------------------------------------------------------------------------------------
# ports


def test_pick_port_moves_off_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]

        assert not port_is_free(busy)
        other = pick_port(busy)
        assert other != busy
        assert port_is_free(other)


def test_pick_port_keeps_a_free_preferred_port() -> None:
    free = find_free_port()
    assert port_is_free(free)
    assert pick_port(free) == free


# ---------------------------------------------------------------------------------------------
# binaries


def test_tool_bin_dirs_hold_the_embedded_executables() -> None:
    pg_bin, redis_bin = tool_bin_dirs()
    assert pg_bin == postgres_bin_dir()
    assert redis_bin == redis_bin_dir()
    for tool in (pg_bin / "psql", pg_bin / "pg_dump", pg_bin / "pg_isready", redis_bin / "redis-cli"):
        assert tool.is_file(), tool
        assert tool.stat().st_mode & stat.S_IXUSR, tool


def test_missing_execute_bit_is_restored(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o644)
    embedded._ensure_executables(tmp_path)
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def test_postgres_starts_serves_and_stops(server_dir: Path, started: list[EmbeddedServer]) -> None:
    port = find_free_port()
    server = start_postgres(server_dir / "postgres", preferred_port=port, database="tw_test")
    started.append(server)

    assert server.name == "postgresql"
    assert server.port == port
    assert server.url == f"postgres://postgres@127.0.0.1:{port}/tw_test"
    assert server.log_file.is_file()
    with psycopg.connect(server.url, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1, current_database()").fetchone() == (1, "tw_test")
    assert pg_isready(server) == 0

    [pid] = server.pids()
    assert psutil.Process(pid).name() == "postgres"
    assert (server.data_dir / "postmaster.pid").read_text().split()[0] == str(pid)

    server.stop()
    assert server.pids() == []
    assert not accepts_connections(server.host, server.port)
    assert pg_isready(server) != 0
    server.stop()  # idempotent


def test_postgres_restart_keeps_data(server_dir: Path, started: list[EmbeddedServer]) -> None:
    data_dir = server_dir / "postgres"
    first = start_postgres(data_dir, preferred_port=find_free_port())
    started.append(first)
    with psycopg.connect(first.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('survives a restart')")
    first.stop()

    second = start_postgres(data_dir, preferred_port=find_free_port())
    started.append(second)
    with psycopg.connect(second.url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("survives a restart",)]


def test_postgres_start_replaces_a_leftover_from_a_crashed_run(
    server_dir: Path, started: list[EmbeddedServer]
) -> None:
    data_dir = server_dir / "postgres"
    crashed = start_postgres(data_dir, preferred_port=find_free_port())
    started.append(crashed)
    [old_pid] = crashed.pids()
    with psycopg.connect(crashed.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    # The owner "crashed": it never called stop(), the postmaster still runs on data_dir.
    again = start_postgres(data_dir, preferred_port=crashed.port)
    started.append(again)

    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
    assert again.pids() != [old_pid]
    assert again.port == crashed.port  # the leftover was stopped first, so its port was free again
    with psycopg.connect(again.url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [(42,)]


def test_postgres_start_failure_names_the_log(server_dir: Path, started: list[EmbeddedServer]) -> None:
    data_dir = server_dir / "postgres"
    server = start_postgres(data_dir, preferred_port=find_free_port())
    started.append(server)
    server.stop()
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\nshared_buffers = 'not a size'\n")

    with pytest.raises(EmbeddedServerError) as caught:
        start_postgres(data_dir, preferred_port=find_free_port())

    assert isinstance(caught.value, ConfigurationError)
    message = str(caught.value)
    assert str(server.log_file) in message
    assert "shared_buffers" in message  # the tail of the log says what is wrong
    assert not (data_dir / "postmaster.pid").exists()


# ---------------------------------------------------------------------------------------------
# Redis


def test_redis_serves_and_keeps_keys_across_a_restart(server_dir: Path, started: list[EmbeddedServer]) -> None:
    data_dir = server_dir / "redis"
    port = find_free_port()
    first = start_redis(data_dir, preferred_port=port)
    started.append(first)

    assert first.name == "redis"
    assert first.port == port
    assert first.url == f"redis://127.0.0.1:{port}/0"
    [pid] = first.pids()
    client = redis.Redis.from_url(first.url)
    assert client.info("server")["process_id"] == pid
    assert client.set("tw:kill_switch", "on")
    assert client.get("tw:kill_switch") == b"on"
    client.close()

    first.stop()
    assert first.pids() == []
    assert not accepts_connections(first.host, first.port)
    first.stop()  # idempotent

    second = start_redis(data_dir, preferred_port=find_free_port())
    started.append(second)
    client = redis.Redis.from_url(second.url)
    assert client.get("tw:kill_switch") == b"on"
    client.close()


def test_redis_start_replaces_a_leftover_from_a_crashed_run(
    server_dir: Path, started: list[EmbeddedServer]
) -> None:
    data_dir = server_dir / "redis"
    crashed = start_redis(data_dir, preferred_port=find_free_port())
    started.append(crashed)
    client = redis.Redis.from_url(crashed.url)
    client.set("k", "v")
    client.close()

    again = start_redis(data_dir, preferred_port=crashed.port)
    started.append(again)

    assert wait_until(lambda: crashed.pids() == [])
    assert again.port == crashed.port
    client = redis.Redis.from_url(again.url)
    assert client.get("k") == b"v"
    client.close()


def test_redis_start_failure_names_the_log(server_dir: Path, started: list[EmbeddedServer]) -> None:
    data_dir = server_dir / "redis"
    data_dir.mkdir()
    (data_dir / "appendonly.aof").write_text("this is not an append-only file\n")

    with pytest.raises(EmbeddedServerError) as caught:
        started.append(start_redis(data_dir, preferred_port=find_free_port()))

    message = str(caught.value)
    assert str(server_dir / "redis.log") in message
    assert "append only file" in message.lower()


def test_postgres_on_a_path_too_long_for_a_unix_socket(server_dir: Path, started: list[EmbeddedServer]) -> None:
    data_dir = server_dir / ("d" * 60) / ("e" * 60) / "postgres"
    assert len(str(data_dir)) > 108  # longer than sun_path: the socket cannot live in PGDATA
    server = start_postgres(data_dir, preferred_port=find_free_port())
    started.append(server)

    with psycopg.connect(server.url) as conn:
        [(socket_dirs,)] = conn.execute("SHOW unix_socket_directories").fetchall()
    sock_dir = Path(socket_dirs)
    try:
        assert sock_dir != data_dir
        assert sock_dir.parent == Path(tempfile.gettempdir())
        assert (sock_dir / f".s.PGSQL.{server.port}").is_socket()
        assert stat.S_IMODE(sock_dir.stat().st_mode) == 0o700
    finally:
        server.stop()
        # Named after the data directory so a real one is reused; this test's path is unique.
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.mark.parametrize("start", [start_postgres, start_redis], ids=["postgres", "redis"])
def test_start_survives_losing_the_picked_port_to_another_process(
    start: Callable[..., EmbeddedServer],
    server_dir: Path,
    started: list[EmbeddedServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", 0))
        thief.listen()
        stolen = thief.getsockname()[1]
        real_pick_port = embedded.pick_port
        picks: list[int] = []

        def pick_port_then_lose_it(preferred: int, host: str = "127.0.0.1") -> int:
            # The first pick "was free" a moment ago but another process bound it since.
            port = stolen if not picks else real_pick_port(preferred, host)
            picks.append(port)
            return port

        monkeypatch.setattr(embedded, "pick_port", pick_port_then_lose_it)
        server = start(server_dir / "data", preferred_port=find_free_port())
        started.append(server)

        assert picks[0] == stolen
        assert server.port not in (stolen, 0)
        assert server.port == picks[-1]
        assert server.pids()
