"""Bounded pagination and throttles that can neither lock an operator out of the kill switch nor
take the API down with Redis.

DRF imports these classes (DEFAULT_PAGINATION_CLASS, DEFAULT_THROTTLE_CLASSES) while it defines
APIView: this module must never import rest_framework.views, directly or not.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import BaseCache, caches
from rest_framework import pagination
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

logger = logging.getLogger(__name__)


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """`?limit=&offset=`; a limit above `max_limit` is cut to it (an unbounded LIMIT is a 500 waiting)."""

    max_limit = 1000


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
