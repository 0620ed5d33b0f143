"""Pytest plugin: decide which PostgreSQL and Redis the tests use, before Django loads.

- DATABASE_URL set → tests use that server (pytest-django creates `test_<name>` on it);
  unset → an embedded PostgreSQL in a temporary directory, stopped at the end.
- REDIS_URL set → tests use that server but their own database number (TEST_REDIS_DB,
  default 15), which they flush freely; unset → an embedded Redis, stopped at the end.
Both paths run the same tests: CI runs the suite once each way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

_servers: list = []
_tmp: Path | None = None


def _with_redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    global _tmp
    from tinywindow import embedded

    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        _tmp = Path(tempfile.mkdtemp(prefix="tinywindow-test-"))
    if not os.environ.get("DATABASE_URL"):
        server = embedded.start_postgres(_tmp / "postgres", preferred_port=embedded.find_free_port(),
                                         database="tinywindow")
        _servers.append(server)
        os.environ["DATABASE_URL"] = server.url
        os.environ["TINYWINDOW_TEST_EMBEDDED"] = "1"
    if not os.environ.get("REDIS_URL"):
        server = embedded.start_redis(_tmp / "redis", preferred_port=embedded.find_free_port())
        _servers.append(server)
        os.environ["REDIS_URL"] = server.url
    else:
        os.environ["REDIS_URL"] = _with_redis_db(os.environ["REDIS_URL"], int(os.environ.get("TEST_REDIS_DB", "15")))
    # A test database of this run's own: two suites on one server (a developer's and CI's, or
    # two checkouts) never drop each other's database.
    os.environ.setdefault("TEST_DATABASE_NAME", f"test_tinywindow_{os.getpid()}")
    # Tests never touch a developer's ./var (secret key, services file).
    os.environ.setdefault("TINYWINDOW_VAR_DIR", str(Path(tempfile.mkdtemp(prefix="tinywindow-var-"))))
    os.environ.setdefault("PAPER_TRADING_MODE", "true")


def pytest_unconfigure(config):
    for server in reversed(_servers):
        try:
            server.stop()
        except Exception as exc:  # report, keep stopping the rest
            print(f"could not stop embedded {server.name}: {exc}")
    _servers.clear()
    if _tmp is not None:
        shutil.rmtree(_tmp, ignore_errors=True)
