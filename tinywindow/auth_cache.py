"""API tokens remembered per web process, forgotten everywhere the moment an account changes.

Every API request authenticates its token. Reading the token, its user and the user's groups is
a database round trip per request (about a tenth of `GET /api/status`'s cost, issue 10), for
rows that change a few times a year. A process keeps what it read, and drops all of it when:

- this process changes a token, a user, a group or a membership (synchronously, in the signal
  handler, so the next request here reads the database);
- another process does: the same handlers publish on the Redis channel
  `tinywindow:auth:changed:<db>` when the change is made and again after its transaction
  commits, and each web process listens on a thread of its own. The channel is per database
  number (`channel()`): a channel is seen by the whole Redis server, and another stack may use
  another database of it. A process skips its own messages: it forgot when it made the change;
- its listener is not subscribed (not yet, Redis down, connection lost): then nothing is kept and
  every request reads the database, as without the cache; a reconnect starts empty, since
  messages may have been missed;
- an entry is older than AUTH_CACHE_SECONDS (default 60): the bound for changes that send no
  signal (a queryset `update()`, SQL typed into psql). 0 turns the cache off.

So a revoked token stops working within the message's trip through Redis (well under a
millisecond on one host), not after a time-to-live, and a Redis outage costs speed, never a
revocation. What is cached is the row the database gave; each request still builds its own
user and token objects from it and checks `is_active`.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "tinywindow:auth:changed"
MAX_ENTRIES = 10_000  # tokens in use at once; beyond it the cache starts again (no eviction order to keep)
_RETRY_SECONDS = (0.5, 1, 2, 5)


class TokenRowCache:
    """token key → the database row `TokenAuthentication` reads for it, while valid (see module doc)."""

    def __init__(self, redis_url: Callable[[], str] = lambda: settings.REDIS_URL) -> None:
        self._redis_url = redis_url
        self._rows: dict[str, tuple[float, Any]] = {}
        # A new value at every forget (next() of a count is atomic; `+= 1` from two threads could
        # write the same value twice): a read that started before a forget is not kept.
        self._epochs = itertools.count(1)
        self._epoch = 0
        self._listening = threading.Event()
        self._owner: tuple[int, object] | None = None  # (pid, run): the running listener's, None when stopped
        self._start_lock = threading.Lock()

    @staticmethod
    def max_age() -> float:
        return float(getattr(settings, "AUTH_CACHE_SECONDS", 0))

    # --- readers (request threads) -----------------------------------------------------------

    def epoch(self) -> int:
        """Take before reading the database; pass to `put` (a forget in between voids the row)."""
        self._ensure_listener()
        return self._epoch

    def get(self, key: str) -> Any | None:
        if not self._listening.is_set():
            return None
        entry = self._rows.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.max_age():
            self._rows.pop(key, None)
            return None
        return entry[1]

    def put(self, key: str, row: Any, epoch: int) -> None:
        if not self._listening.is_set() or self.max_age() <= 0:
            return
        if len(self._rows) >= MAX_ENTRIES:
            self._rows.clear()
        if epoch == self._epoch:
            self._rows[key] = (time.monotonic(), row)
            if epoch != self._epoch:  # a forget ran between the check and the write
                self._rows.pop(key, None)

    def forget(self) -> None:
        self._epoch = next(self._epochs)
        self._rows.clear()

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def close(self) -> None:
        """Stop the listener (within its 5 s wait) and keep nothing; the next `epoch()` starts again."""
        with self._start_lock:
            self._owner = None
            self._listening.clear()
            self.forget()

    # --- the listener thread -------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        # One thread per process, started by the first request (after gunicorn's fork: a thread
        # of the parent would not exist in the child).
        owner = self._owner
        if (owner is not None and owner[0] == os.getpid()) or self.max_age() <= 0:
            return
        with self._start_lock:
            if self._owner is not None and self._owner[0] == os.getpid():
                return
            self._owner = owner = (os.getpid(), object())
            self._listening.clear()
            self.forget()
            threading.Thread(target=self._listen, args=(owner,), name="auth-cache-listener", daemon=True).start()

    def _listen(self, owner: tuple[int, object]) -> None:
        failures = 0
        while self._owner is owner:
            pubsub = None
            try:
                # No socket timeout: a quiet channel is the normal case. A dead peer is found by
                # the health check (a PING every 30 s while waiting).
                client = redis.Redis.from_url(self._redis_url(), socket_connect_timeout=1.0,
                                              health_check_interval=30)
                pubsub = client.pubsub()
                pubsub.subscribe(channel(client))
                while self._owner is owner:
                    message = pubsub.get_message(timeout=5.0)
                    if message is None or self._owner is not owner:
                        continue
                    if message["type"] == "subscribe":
                        self.forget()  # whatever happened while unsubscribed is unknown
                        self._listening.set()
                        failures = 0
                    elif message["type"] == "message" and message["data"] != _origin().encode():
                        self.forget()  # this process's own changes were forgotten when they were made
            except Exception as exc:  # noqa: BLE001 - any failure: stop caching, then reconnect
                if self._owner is not owner:
                    return
                self._listening.clear()
                self.forget()
                if failures == 0:
                    logger.warning("auth cache off until Redis answers again: %s", exc)
                time.sleep(_RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)])
                failures += 1
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001, S110 - closing a broken connection
                        pass


TOKEN_ROWS = TokenRowCache()


def _origin() -> str:
    """This process's name on the channel (a fork gets its own)."""
    pid = os.getpid()
    if _ORIGINS.get("pid") != pid:
        _ORIGINS.update(pid=pid, name=uuid.uuid4().hex)
    return _ORIGINS["name"]


_ORIGINS: dict[str, Any] = {}


def channel(client: redis.Redis) -> str:
    """The channel of the stack using `client`'s Redis database."""
    return f"{CHANNEL_PREFIX}:{client.connection_pool.connection_kwargs.get('db', 0)}"


def _publish() -> None:
    from tinywindow.redis_client import get_redis

    try:
        client = get_redis()
        client.publish(channel(client), _origin())
    except redis.RedisError as exc:
        # Other web processes keep what they read for at most AUTH_CACHE_SECONDS.
        logger.warning("auth cache: could not tell the other processes that an account changed: %s", exc)


def account_changed(**_: Any) -> None:
    """Signal receiver: a token, user, group or membership changed (or is about to commit)."""
    TOKEN_ROWS.forget()
    _publish()
    transaction.on_commit(_after_commit)


def _after_commit() -> None:
    # Another process may have read the old row between the first message and the commit.
    TOKEN_ROWS.forget()
    _publish()


def connect_signals() -> None:
    """Watch every model a token's authentication reads (called from TinyWindowConfig.ready).
    Senders are named one by one: a receiver on every model would make the order path's
    set-based writes (tinywindow.rows) refuse to bypass `save()`."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db.models.signals import m2m_changed, post_delete, post_save
    from rest_framework.authtoken.models import Token, TokenProxy

    user_model = get_user_model()
    for model in (Token, TokenProxy, user_model, Group):
        post_save.connect(account_changed, sender=model, dispatch_uid=f"auth-cache-save-{model._meta.label}")
        post_delete.connect(account_changed, sender=model, dispatch_uid=f"auth-cache-delete-{model._meta.label}")
    through = user_model._meta.get_field("groups").remote_field.through
    m2m_changed.connect(account_changed, sender=through, dispatch_uid="auth-cache-groups")
