"""What the operator commands share (`killswitch`, `breakers`, `agents`, `status`): who acts, how
errors become exit codes, how tables print.

Exit codes: 0 done; 2 usage or validation error (a bad option, an unknown name, an empty reason:
nothing was changed); 1 operational failure (database or Redis unreachable, state unknown: a
human must look).
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import redis
from django.core.management.base import CommandError
from django.db import DatabaseError

from tinywindow.exceptions import ConfigurationError, OperationalError, ValidationError

CLI_SOURCE = "cli"
EXIT_USAGE = 2
EXIT_FAILURE = 1


def cli_actor() -> str:
    """`cli:<os user>`: the actor recorded for a command-line action."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = "unknown"
    return f"cli:{user}"


def usage_error(message: str) -> CommandError:
    return CommandError(message, returncode=EXIT_USAGE)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn TinyWindow's and the servers' errors into one clear line and the right exit code."""
    try:
        yield
    except ValidationError as exc:
        raise CommandError(f"{exc.field}: {exc.message}" if exc.field else exc.message,
                           returncode=EXIT_USAGE) from None
    except (OperationalError, ConfigurationError) as exc:
        raise CommandError(_first_line(exc), returncode=EXIT_FAILURE) from None
    except DatabaseError as exc:
        raise CommandError(f"database unreachable or failing: {_first_line(exc)}", returncode=EXIT_FAILURE) from None
    except redis.RedisError as exc:
        raise CommandError(f"Redis unreachable or failing: {_first_line(exc)}", returncode=EXIT_FAILURE) from None


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
