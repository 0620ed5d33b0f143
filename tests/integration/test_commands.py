"""Command-line behaviour a user sees: clear errors, non-zero exits, never a traceback."""

import os
import shlex
import socket
import subprocess
import sys

import pytest

from tests.helpers import ROOT, manage
from tinywindow.embedded import find_free_port


def _env(**changes):
    env = dict(os.environ)
    env.update(changes)
    return env


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("PAPER_TRADING_MODE", "flase", "PAPER_TRADING_MODE='flase' is not a boolean"),
    ("DB_CONN_MAX_AGE", "abc", "DB_CONN_MAX_AGE='abc' is not a valid int"),
    ("DB_PREPARED_STATEMENTS", "sometimes", "DB_PREPARED_STATEMENTS='sometimes' is not a boolean"),
    ("DATABASE_URL", "mysql://u@h/db", "DATABASE_URL must be a postgres://"),
    ("REDIS_URL", "localhost:6379", "REDIS_URL must start with redis://"),
    ("LOCAL_NETWORKS", "10.0.0.0/33", "LOCAL_NETWORKS has an invalid network"),
    ("AUTH_CACHE_SECONDS", "soon", "AUTH_CACHE_SECONDS='soon' is not a valid float"),
    ("AUTH_CACHE_SECONDS", "nan", "AUTH_CACHE_SECONDS='nan' is not a valid float"),
    ("AUTH_CACHE_SECONDS", "-1", "AUTH_CACHE_SECONDS=-1.0 must be between 0 and 3600 seconds"),
])
def test_any_command_when_env_value_malformed_then_one_line_error_and_exit_2(name, value, expected):
    result = manage("check", env=_env(**{name: value}))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_up_when_web_port_taken_then_clear_error_and_exit_1(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = manage("up", "--web-port", str(port), env=_env(TINYWINDOW_VAR_DIR=str(tmp_path)))
    assert result.returncode == 1
    assert f"port {port} for the web is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_when_database_unreachable_then_clear_error_and_exit_1(tmp_path):
    dead = find_free_port()
    result = manage("up", "--web-port", str(find_free_port()), "--engine-port", str(find_free_port()),
                    "--flower-port", str(find_free_port()),
                    env=_env(TINYWINDOW_VAR_DIR=str(tmp_path), DATABASE_URL=f"postgres://tw:secret@127.0.0.1:{dead}/x"))
    assert result.returncode == 1
    assert "cannot reach DATABASE_URL postgres://tw:***@127.0.0.1" in result.stderr
    assert "secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_up_when_redis_unreachable_then_clear_error_and_exit_1(tmp_path):
    dead = find_free_port()
    result = manage("up", "--web-port", str(find_free_port()), "--engine-port", str(find_free_port()),
                    "--flower-port", str(find_free_port()),
                    env=_env(TINYWINDOW_VAR_DIR=str(tmp_path), REDIS_URL=f"redis://127.0.0.1:{dead}/0"))
    assert result.returncode == 1
    assert "cannot reach REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_when_database_missing_on_reachable_server_then_creates_it(tmp_path):
    """A fresh PostgreSQL has no `tinywindow` database: `up` creates it (then stops here on the dead Redis)."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    server = urlsplit(os.environ["DATABASE_URL"].replace("postgres://", "postgresql://", 1))
    name = f"tw_created_{uuid.uuid4().hex[:8]}"
    admin_url = urlunsplit(server._replace(path="/postgres"))
    missing_url = urlunsplit(server._replace(path=f"/{name}"))
    result = manage("up", "--web-port", str(find_free_port()), "--engine-port", str(find_free_port()),
                    "--flower-port", str(find_free_port()),
                    env=_env(TINYWINDOW_VAR_DIR=str(tmp_path), DATABASE_URL=missing_url,
                             REDIS_URL=f"redis://127.0.0.1:{find_free_port()}/0"))
    try:
        assert f"created database '{name}'" in result.stdout
        assert "cannot reach REDIS_URL" in result.stderr  # it went on to the next check
        with psycopg.connect(admin_url, autocommit=True) as conn:
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_shellenv_when_run_then_prints_path_with_bundled_tools():
    result = manage("shellenv")
    assert result.returncode == 0
    assert result.stdout.startswith('export PATH="')
    bin_dirs = result.stdout.split('"')[1].split(":")
    assert any(os.path.exists(os.path.join(d, "psql")) for d in bin_dirs)
    assert any(os.path.exists(os.path.join(d, "redis-cli")) for d in bin_dirs)


def test_shellenv_when_evaluated_then_runbook_mode_check_and_psql_reach_the_system(db):
    from django.conf import settings

    from tests.conftest import _test_database_url
    from tinywindow.redis_client import get_redis

    # The runbook's "Check Mode" (`echo $PAPER_TRADING_MODE`) in a shell that never set it, its
    # SQL through psql, and its `redis-cli GET` verbatim: the test Redis is not database 0, and
    # on the embedded servers not on 6379 either (where the machine's own Redis may answer).
    get_redis().set("tinywindow:kill_switch:active", "shellenv-test")
    script = (f'eval "$({shlex.quote(sys.executable)} manage.py shellenv)"; echo "mode=$PAPER_TRADING_MODE"; '
              'psql -XAtc "SELECT current_database()"; redis-cli GET tinywindow:kill_switch:active')
    env = {k: v for k, v in os.environ.items() if k != "PAPER_TRADING_MODE" and not k.startswith("PG")}
    env["DATABASE_URL"] = _test_database_url()
    result = subprocess.run(["bash", "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["mode=true", settings.DATABASES["default"]["NAME"], "shellenv-test"]

    live = manage("shellenv", env={**env, "PAPER_TRADING_MODE": "false", "SECRET_KEY": "x" * 50})
    assert "export PAPER_TRADING_MODE=false" in live.stdout.splitlines()


def test_shellenv_redis_cli_when_url_names_host_port_db_user_and_tls_then_wrapper_passes_them(tmp_path):
    from tinywindow.management.commands.shellenv import redis_cli_wrapper

    wrapper = redis_cli_wrapper("rediss://ops:s3cret@10.0.0.5:6380/3", tmp_path)
    script = wrapper.read_text()
    assert os.access(wrapper, os.X_OK)
    assert '-h 10.0.0.5 -p 6380 -n 3 --user ops --tls "$@"' in script
    assert "s3cret" not in script  # REDISCLI_AUTH supplies it: no password on disk
    assert redis_cli_wrapper("unix:///run/redis.sock", tmp_path / "other") is None


def test_up_help_when_asked_then_explains_options():
    result = manage("up", "--help")
    assert result.returncode == 0
    assert "--web-port" in result.stdout and "Ctrl-C" in result.stdout
    assert sys.executable  # the same interpreter ran it
