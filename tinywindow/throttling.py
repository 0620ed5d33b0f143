"""Bounded pagination and throttles that can neither lock an operator out of the kill switch nor
take the API down with Redis.

DRF imports these classes (DEFAULT_PAGINATION_CLASS, DEFAULT_THROTTLE_CLASSES) while it defines
APIView: this module must never import rest_framework.views, directly or not.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import BaseCache, caches
from rest_framework import exceptions, pagination
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

logger = logging.getLogger(__name__)


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


class _TinyWindowThrottle:
    """Shared behaviour of the anonymous and the user throttle.

    - Methods a view lists in `unthrottled_methods` pass (the kill-switch activation: the big red
      button must never answer 429).
    - Counters live in the `throttle` cache (Redis, shared by every web worker). If it cannot be
      reached the request passes and a warning is logged: throttling protects the API, it must not
      take it down.
    - The rate is read from the settings at each request, so a test or a reload sees the current one.
    """

    scope: str

    @property
    def cache(self) -> BaseCache:
        return caches["throttle"]

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method in getattr(view, "unthrottled_methods", ()):
            return True
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # the cache (Redis) is down: fail open, loudly
            logger.warning("API throttle skipped, its cache is unreachable: %s", exc)
            return True


class AnonThrottle(_TinyWindowThrottle, AnonRateThrottle):
    pass


class UserThrottle(_TinyWindowThrottle, UserRateThrottle):
    pass
