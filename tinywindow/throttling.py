"""Bounded pagination and throttles that can neither lock an operator out of the kill switch nor
take the API down with Redis; content negotiation without parsing the usual Accept header.

DRF imports these classes (DEFAULT_PAGINATION_CLASS, DEFAULT_THROTTLE_CLASSES,
DEFAULT_CONTENT_NEGOTIATION_CLASS) while it defines APIView: this module must never import
rest_framework.views, directly or not.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from rest_framework import exceptions, pagination
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

logger = logging.getLogger(__name__)


class ContentNegotiation(DefaultContentNegotiation):
    """DRF's, with its most common case answered before any parsing: no `?format=` and no Accept
    header, or `Accept: */*` (curl, scripts, load generators). DRF's answer to that is always the
    view's first renderer with its own media type; working it out parses and sorts the header
    on every request (a few percent of `GET /api/status`, issue 10)."""

    def select_renderer(self, request: Request, renderers: list, format_suffix: str | None = None) -> tuple:
        if (renderers and not format_suffix and request.META.get("HTTP_ACCEPT", "*/*") == "*/*"
                and self.settings.URL_FORMAT_OVERRIDE not in request.query_params):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """`?limit=&offset=`; a limit above `max_limit` is cut to it (an unbounded LIMIT is a 500 waiting)."""

    max_limit = 1000

    def get_limit(self, request: Any) -> int | None:
        self._check_whole_number(request, self.limit_query_param, minimum=1, maximum=None)  # capped by DRF
        return super().get_limit(request)

    def get_offset(self, request: Any) -> int:
        # PostgreSQL's OFFSET is a bigint: a larger one would be a database error, not an empty page.
        self._check_whole_number(request, self.offset_query_param, minimum=0, maximum=2**63 - 1)
        return super().get_offset(request)

    @staticmethod
    def _check_whole_number(request: Any, name: str, *, minimum: int, maximum: int | None) -> None:
        """DRF ignores a bad `limit`/`offset` and answers with the default page: a client with a
        typo would never know. Refuse it (400 naming the parameter) instead."""
        raw = request.query_params.get(name)
        if raw in (None, ""):
            return
        if not raw.isascii() or not raw.isdigit() or int(raw) < minimum or (maximum is not None and int(raw) > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise exceptions.ValidationError({name: [f"must be a whole number {bound}"]})


# A sliding-window counter (two fixed windows, the previous one weighted by how much of it is
# still inside the sliding window): O(1) in Redis, where DRF's own throttle keeps, unpickles and
# rewrites a list of every request's timestamp in the window (6,000 entries at the default user
# rate; issue 10's API bench). A web process reserves up to LEASE_SHARE of the limit at a time
# and spends it locally (see _TinyWindowThrottle): one round trip per lease, not per request.
# KEYS: this window's counter, the previous one's. ARGV: the previous window's weight, the limit,
# the key's lifetime, the most to reserve. The k-th reserved request is one the counter allows:
# previous * weight + current + (k - 1) < limit (with a reserve of 1: the check of one request).
# Returns {reserved (0: refused), this window's count, the previous one's}.
_SLIDING_WINDOW = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local room = math.ceil(tonumber(ARGV[2]) - previous * tonumber(ARGV[1]) - current)
local reserved = math.min(tonumber(ARGV[4]), room)
if reserved <= 0 then
  return {0, current, previous}
end
current = redis.call('INCRBY', KEYS[1], reserved)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {reserved, current, previous}
"""
# The share of a limit one process reserves at a time (at the default user rate, 6,000/minute:
# 60 requests). Below 200 a minute it is 1: every request asks Redis, exactly as before.
LEASE_SHARE = 0.01
# Reserved requests not yet spent, per process: (Redis, this window's counter key, limit, duration) → how many.
_leases: dict[tuple[str, str, int, int], int] = {}
_leases_lock = threading.Lock()
_clients: dict[str, tuple[redis.Redis, Any]] = {}


def _redis_for(location: str, options: dict[str, Any]) -> tuple[redis.Redis, Any]:
    """One client (and registered script) per Redis URL, per process: the throttle cache's
    LOCATION is read at each request, so a test or a reload that changes it is followed."""
    if location not in _clients:
        timeouts = {k: v for k, v in options.items() if k in ("socket_connect_timeout", "socket_timeout")}
        client = redis.Redis.from_url(location, **timeouts)
        _clients[location] = (client, client.register_script(_SLIDING_WINDOW))
    return _clients[location]


class CursorPagination(pagination.CursorPagination):
    """`?limit=` and an opaque `?cursor=` (the `next`/`previous` links): keyset pagination on the
    view's `ordering` (its first field, with an offset among equal values). For the big tables
    (orders: millions of rows) where LimitOffsetPagination's COUNT(*) and deep OFFSETs cost more
    than the page itself (issue 10); the answer has `next`, `previous` and `results`, no `count`.
    Bad input is a 400 naming the parameter, never a silently different page: a `limit` that is
    not a whole number >= 1, a cursor this server did not write, and `offset` (not supported here:
    follow `next`)."""

    page_size_query_param = "limit"
    page_size_query_description = "Number of results to return per page (at most 1000)."
    max_page_size = 1000
    ordering = ("-created_at", "-id")
    template = None

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list | None:
        if request.query_params.get("offset") is not None:
            raise exceptions.ValidationError({"offset": ["not supported on this list: follow `next` (a cursor)"]})
        LimitOffsetPagination._check_whole_number(request, "limit", minimum=1, maximum=None)  # capped by DRF
        self._position_field = queryset.model._meta.get_field(self.ordering[0].lstrip("-"))
        self._row_position = getattr(view, "cursor_position", None)
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request: Any) -> Any:
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:  # the first page: most requests
            return None
        try:
            base64.b64decode(encoded.encode("ascii"), validate=True)  # DRF skips what is not base64
            cursor = super().decode_cursor(request)
        except (exceptions.NotFound, UnicodeError, binascii.Error):
            raise self._invalid() from None
        if cursor is not None and cursor.position is not None:
            # DRF filters with the position as given: one that is not a value of the ordering
            # field would be a database error (a 500); naive datetimes are never written here.
            try:
                value = self._position_field.to_python(cursor.position)
            except DjangoValidationError:
                raise self._invalid() from None
            if value is None or (isinstance(value, datetime) and timezone.is_naive(value)):
                raise self._invalid()
        return cursor

    def _invalid(self) -> exceptions.ValidationError:
        # Made only when needed: the message is a lazy translation, a tenth of a millisecond to
        # render, which every first page paid for nothing.
        return exceptions.ValidationError({self.cursor_query_param: [str(self.invalid_cursor_message)]})

    def _get_position_from_instance(self, instance: Any, ordering: Any) -> str:
        # Rows from values_list() are tuples: the view says where the position is (`cursor_position`).
        if self._row_position is not None:
            return self._row_position(instance)
        field_name = ordering[0].lstrip("-")
        value = instance[field_name] if isinstance(instance, dict) else getattr(instance, field_name)
        return value.isoformat() if isinstance(value, datetime) else str(value)


class _TinyWindowThrottle:
    """Shared behaviour of the anonymous and the user throttle.

    - Methods a view lists in `unthrottled_methods` pass (the kill-switch activation: the big red
      button must never answer 429).
    - Counters live in the Redis of the `throttle` cache (shared by every web worker). A process
      reserves up to 1 % of the limit in one Lua call (`_SLIDING_WINDOW`) and spends it without
      asking again: at 6,000/minute one call per 60 requests, where one per request was a sixth
      of `GET /api/status`'s time (issue 10). Nothing is ever let through beyond the limit; slots
      a process reserved and did not spend before its window ended still count, so a client near
      its limit may be refused up to 1 % per web process early. If Redis cannot be reached the
      request passes and a warning is logged: throttling protects the API, it must not take it down.
    - The rate is read from the settings at each request, so a test or a reload sees the current one.
    """

    scope: str
    _wait: float = 0.0

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method in getattr(view, "unthrottled_methods", ()):
            return True
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        try:
            return self._count(self.key)
        except Exception as exc:  # Redis is down or misconfigured: fail open, loudly
            logger.warning("API throttle skipped, its cache is unreachable: %s", exc)
            return True

    def _count(self, key: str) -> bool:
        config = settings.CACHES["throttle"]
        now = time.time()
        window = int(now // self.duration)
        prefix = f"{config.get('KEY_PREFIX', '')}:sw:{key}"
        counter = f"{prefix}:{window}"
        lease = (config["LOCATION"], counter, self.num_requests, self.duration)
        with _leases_lock:
            if _leases.get(lease, 0) > 0:
                _leases[lease] -= 1
                return True
        _, script = _redis_for(config["LOCATION"], config.get("OPTIONS", {}))
        elapsed = now - window * self.duration
        weight = 1 - elapsed / self.duration  # share of the previous window still inside the sliding one
        reserve = max(1, int(self.num_requests * LEASE_SHARE))
        reserved, current, previous = script(keys=[counter, f"{prefix}:{window - 1}"],
                                             args=[repr(weight), self.num_requests, 2 * self.duration, reserve])
        if reserved > 0:
            with _leases_lock:
                # Clients come and go: leases of past windows are worth nothing, and a current one
                # dropped here only costs its unspent slots.
                if len(_leases) > 10_000:
                    _leases.clear()
                _leases[lease] = _leases.get(lease, 0) + reserved - 1
            return True
        self._wait = self._retry_after(current, previous, elapsed)
        return False

    def _retry_after(self, current: int, previous: int, elapsed: float) -> float:
        """Seconds until the sliding count drops below the limit (what Retry-After says)."""
        if current >= self.num_requests or previous == 0:
            return self.duration - elapsed  # only the next window helps
        # previous * (1 - (elapsed + t) / duration) + current < limit
        needed = self.duration * (1 - (self.num_requests - current) / previous) - elapsed
        return max(needed, 1.0)

    def wait(self) -> float | None:
        return max(self._wait, 1.0)


class AnonThrottle(_TinyWindowThrottle, AnonRateThrottle):
    pass


class UserThrottle(_TinyWindowThrottle, UserRateThrottle):
    pass
