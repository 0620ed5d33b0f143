"""Where a local TinyWindow keeps its state, and how processes find the embedded servers.

`manage.py up` starts embedded PostgreSQL/Redis when `DATABASE_URL`/`REDIS_URL` are unset and
records their addresses in `var/run/services.json`. Any later `manage.py` command (`dbshell`,
`shell`, `killswitch`, ...) run without those variables reads the same file, so it talks to the
servers that `up` started instead of guessing. This module imports nothing from Django: the
settings module uses it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tinywindow"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def var_dir() -> Path:
    """The data directory (`./var` unless `TINYWINDOW_VAR_DIR` says otherwise)."""
    return Path(os.environ.get("TINYWINDOW_VAR_DIR") or BASE_DIR / "var").resolve()


def services_file() -> Path:
    return var_dir() / "run" / "services.json"


def read_services() -> dict[str, str]:
    """Addresses recorded by a running `up`; empty when none is running."""
    try:
        data = json.loads(services_file().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


def write_services(**entries: str) -> None:
    path = services_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    current = read_services()
    current.update(entries)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2))
    tmp.replace(path)


def clear_services() -> None:
    try:
        services_file().unlink()
    except FileNotFoundError:
        pass


def resolve_database_url() -> str:
    return os.environ.get("DATABASE_URL") or read_services().get("database_url") or DEFAULT_DATABASE_URL


def resolve_redis_url() -> str:
    return os.environ.get("REDIS_URL") or read_services().get("redis_url") or DEFAULT_REDIS_URL
