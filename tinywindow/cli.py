"""What the operator commands share (`killswitch`, `breakers`, `agents`, `status`): who acts, how
errors become exit codes, how tables print.

Exit codes: 0 done; 2 usage or validation error (a bad option, an unknown name, an empty reason:
nothing was changed); 1 operational failure (database or Redis unreachable, state unknown: a
human must look).
"""

from __future__ import annotations

import argparse
import getpass
import math
from collections.abc import Callable, Iterator, Sequence
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


# argparse types: a bad value is a usage error (exit 2, one line) before anything runs.


def port_number(raw: str) -> int:
    """A TCP port, 1-65535."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def count(minimum: int = 0, maximum: int = 10_000) -> Callable[[str], int]:
    """An integer within [minimum, maximum] (worker counts, how many files to keep, ...)."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value} is not between {minimum} and {maximum}")
        return value

    parse.__name__ = "count"  # argparse names the type in its message
    return parse


def positive_seconds(raw: str) -> float:
    """A finite number of seconds > 0 (NaN and infinity refused)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a positive number of seconds")
    return value


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
