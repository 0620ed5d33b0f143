import os
import shlex
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand

from tinywindow.embedded import tool_bin_dirs

WRAPPER_NOTE = "# Written by `manage.py shellenv`: the runbook's redis-cli talks to the running system's Redis."


class Command(BaseCommand):
    help = (
        "Print shell lines for the runbook's commands: the bundled psql, pg_isready, pg_dump and redis-cli on "
        "PATH; PGHOST, PGPORT, PGUSER and PGDATABASE of the running system's database, so `psql` opens it; "
        "a `redis-cli` that talks to the running system's Redis (its host, port and database number: the "
        "embedded Redis is not on 6379 when that port was taken); no password is printed (use `python "
        "manage.py dbshell` for the database, REDISCLI_AUTH for Redis where one is needed); and "
        "PAPER_TRADING_MODE as the system runs it (`echo $PAPER_TRADING_MODE`). "
        'Use: eval "$(python manage.py shellenv)"'
    )

    def handle(self, *args, **options):
        dirs = [str(d) for d in tool_bin_dirs()]
        redis_cli = redis_cli_wrapper(settings.REDIS_URL, settings.VAR_DIR / "bin")
        if redis_cli is not None:
            dirs.insert(0, str(redis_cli.parent))
        self.stdout.write(f'export PATH="{":".join(dirs)}:$PATH"')
        db = settings.DATABASES["default"]
        for name, value in (("PGHOST", db.get("HOST") or "127.0.0.1"), ("PGPORT", db.get("PORT") or 5432),
                            ("PGUSER", db.get("USER")), ("PGDATABASE", db.get("NAME"))):
            if value:
                self.stdout.write(f"export {name}={shlex.quote(str(value))}")
        if urlsplit(settings.REDIS_URL).password:
            self.stdout.write("# REDIS_URL has a password: `export REDISCLI_AUTH=...` for redis-cli (not printed)")
        # The effective mode (environment, .env, or the default), not only what this shell happens to hold.
        self.stdout.write(f"export PAPER_TRADING_MODE={'true' if settings.PAPER_TRADING_MODE else 'false'}")


def redis_cli_wrapper(url: str, directory: Path) -> Path | None:
    """Write `directory/redis-cli`, which runs the bundled redis-cli against the Redis of `url`
    (host, port, database number, TLS), so that the runbook's `redis-cli GET ...` reads the running
    system's keys verbatim. Without it redis-cli asks 127.0.0.1:6379, database 0: another server
    (or none) when the system's Redis is elsewhere — an empty answer to "is the kill switch
    active?". Options given to it still win (redis-cli takes the last one). None for a URL it
    cannot express (a Unix socket) or without a bundled redis-cli. The password, if any, is not
    written to disk: REDISCLI_AUTH supplies it."""
    parts = urlsplit(url)
    real = shutil.which("redis-cli", path=os.pathsep.join(str(d) for d in tool_bin_dirs()))
    if parts.scheme not in ("redis", "rediss") or real is None:
        return None
    argv = [real, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    database = unquote(parts.path.lstrip("/"))
    if database.isdigit():
        argv += ["-n", database]
    if parts.username and parts.username != "default":
        argv += ["--user", unquote(parts.username)]
    if parts.scheme == "rediss":
        argv.append("--tls")
    script = f'#!/bin/sh\n{WRAPPER_NOTE}\nexec {shlex.join(argv)} "$@"\n'
    wrapper = directory / "redis-cli"
    if wrapper.exists() and wrapper.read_text() == script:
        return wrapper
    directory.mkdir(parents=True, exist_ok=True)
    draft = directory / f".redis-cli.{os.getpid()}"  # replaced in one step: a shell never runs half a file
    draft.write_text(script)
    draft.chmod(0o755)
    os.replace(draft, wrapper)
    return wrapper
