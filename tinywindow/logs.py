"""Log formats and the context every line carries (LOG_FORMAT=plain, the default, or json).

An incident is followed from tick to fill by the ids on each line:

- `task_id`, `task_name`, `parent_task_id`, `root_task_id`: the Celery task running (set by
  tinywindow/celery_signals.py for the task's duration). `execute_order`'s root is the
  `tick_agent` task that created the order, so `root_task_id` ties a fill to its tick.
- `agent_id`, `order_id`: from the task's arguments (a task taking `agent_id`/`order_id`),
  or from `extra={"order_id": …}` on the log call (which wins), or `log_context(...)`.

With LOG_FORMAT=json every line is one JSON object: ts (UTC, ISO 8601), level, logger,
message, the ids above when known, any other `extra` fields, and `exc_info` as text.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("task_id", "task_name", "parent_task_id", "root_task_id", "agent_id", "order_id")
LOG_FORMATS = ("plain", "json")

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("tinywindow_log_context",
                                                                                  default=None)

# Attributes every LogRecord has: anything else on a record came from `extra=` (or a filter).
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


def bind_context(**values: Any) -> contextvars.Token:
    """Add ids to the context of this thread/task; undo with `reset_context(token)`."""
    merged = {**(_context.get() or {}), **{k: v for k, v in values.items() if v is not None}}
    return _context.set(merged)


def reset_context(token: contextvars.Token) -> None:
    _context.reset(token)


def clear_context() -> None:
    _context.set(None)


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    token = bind_context(**values)
    try:
        yield
    finally:
        reset_context(token)


# Credentials that must never reach a log line: the environment's, and those read from Vault
# (registered by the gateway when it loads them). Values shorter than this are not worth masking.
SECRET_ENV_VARS = ("EXCHANGE_API_KEY", "EXCHANGE_API_SECRET", "VAULT_TOKEN", "FLOWER_BASIC_AUTH", "SECRET_KEY",
                   "ADMIN_PASSWORD")
_MIN_SECRET_LENGTH = 8
_registered_secrets: set[str] = set()
REDACTED = "[redacted]"


def register_secret(value: str) -> None:
    """Mask `value` in every log line of this process from now on."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        _registered_secrets.add(value)


def _secrets() -> list[str]:
    values = {os.environ.get(name, "") for name in SECRET_ENV_VARS} | _registered_secrets
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True)


class RedactSecretsFilter(logging.Filter):
    """The last line of defence: a credential in a message or a traceback becomes `[redacted]`.
    (The first: libraries that log request headers, ccxt at DEBUG, are kept at INFO.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        hidden = _secrets()
        if not hidden:
            return True
        message = record.getMessage()
        if any(value in message for value in hidden):
            for value in hidden:
                message = message.replace(value, REDACTED)
            record.msg, record.args = message, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and any(value in record.exc_text for value in hidden):
            for value in hidden:
                record.exc_text = record.exc_text.replace(value, REDACTED)
        return True


class ContextFilter(logging.Filter):
    """Copies the current context onto each record (without overriding `extra=` values)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


def record_context(record: logging.LogRecord) -> dict[str, Any]:
    """The context ids first (in a fixed order), then any other `extra` fields."""
    found = {key: getattr(record, key) for key in CONTEXT_FIELDS if getattr(record, key, None) is not None}
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRIBUTES and key not in found and not key.startswith("_") and value is not None:
            found[key] = value
    return found


class PlainFormatter(logging.Formatter):
    """The classic one-line format, with the context ids appended as key=value (other `extra`
    fields only in JSON: Celery's own lines carry bulky ones)."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, style: str = "%", **kwargs: Any) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s %(message)s", datefmt, style, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = {key: getattr(record, key) for key in CONTEXT_FIELDS if getattr(record, key, None) is not None}
        if not context:
            return text
        suffix = " ".join(f"{key}={value}" for key, value in context.items())
        first, newline, rest = text.partition("\n")  # keep a traceback below the line
        return f"{first} [{suffix}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in record_context(record).items():
            payload.setdefault(key, value)
        if record.exc_info:  # the text RedactSecretsFilter already cleaned, when it ran
            payload["exc_info"] = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def logging_config(*, level: str = "INFO", log_format: str = "plain") -> dict[str, Any]:
    """The dictConfig for every process: Django (settings.LOGGING), Celery workers and beat
    (tinywindow/celery_signals.py) and gunicorn (tinywindow/gunicorn_conf.py)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "tinywindow.logs.ContextFilter"},
                    "secrets": {"()": "tinywindow.logs.RedactSecretsFilter"}},
        "formatters": {
            "plain": {"()": "tinywindow.logs.PlainFormatter"},
            "json": {"()": "tinywindow.logs.JsonFormatter"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["context", "secrets"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # ccxt logs every request with its headers at DEBUG: the API key is one of them.
            "ccxt": {"level": "INFO"},
            # gunicorn's own loggers go through the same handler (see gunicorn_conf.py).
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }
