"""API plumbing shared by every app: TinyWindow errors become HTTP answers (never a 500), JSON
404s under /api/, and every error answer documented in the OpenAPI schema.

Pagination and throttling live in tinywindow.throttling: DRF imports them while it defines
APIView, so they must not import rest_framework.views (this module does)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from django import db
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import generics, serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils import encoders
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from tinywindow.exceptions import OperationalError, TinyWindowError, ValidationError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ValidationError):
        field = exc.field or "non_field_errors"
        return Response({field: [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, OperationalError):
        return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    if isinstance(exc, (db.OperationalError, db.InterfaceError)):
        # PostgreSQL down, or out of connections (the runbook's "pool exhausted"): temporary, so a
        # 503 the client may retry, not a 500. The message never carries the driver's text (hosts).
        return Response({"detail": "the database cannot be reached right now; retry later"},
                        status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "5"})
    if isinstance(exc, TinyWindowError):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    return drf_exception_handler(exc, context)


# --- filtered lists -------------------------------------------------------------------------------


@functools.cache
def _filter_names(serializer_class: type[serializers.Serializer]) -> frozenset[str]:
    return frozenset(serializer_class().fields)


@functools.cache
def _no_filters(serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """What an empty query validates to (the defaults), once: most reads pass no filter, and
    making a serializer costs a deep copy of its fields (issue 10)."""
    serializer = serializer_class(data={})
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def query_filters(view: APIView, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """The validated query filters (empty values are ignored); a bad one is a 400 naming it."""
    names = _filter_names(serializer_class)
    data = {k: v for k, v in view.request.query_params.items() if k in names and v != ""}
    if not data:
        return dict(_no_filters(serializer_class))
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class FilteredListView(generics.ListAPIView):
    """A read-only list, a page at a time, whose query parameters are validated by
    `filter_serializer_class` and passed to `selector` (renamed by `filter_names`)."""

    filter_serializer_class: type[serializers.Serializer]
    selector: Callable[..., Any]
    filter_names: dict[str, str] = {}

    def get_queryset(self) -> QuerySet:
        filters = query_filters(self, self.filter_serializer_class)
        return type(self).selector(**{self.filter_names.get(k, k): v for k, v in filters.items()})


# --- rendering -------------------------------------------------------------------------------------


class UtcJSONEncoder(encoders.JSONEncoder):
    """DRF's encoder, with a naive datetime taken as UTC (`Z`): the only naive ones in a body are
    the hot read paths' timestamps, read `AT TIME ZONE 'UTC'` (trading.api.serializers.RowSerializer)."""

    def default(self, obj: Any) -> Any:
        if isinstance(obj, datetime) and obj.tzinfo is None:
            obj = obj.replace(tzinfo=UTC)
        return super().default(obj)


class FastJSONRenderer(JSONRenderer):
    """DRF's JSONRenderer, byte for byte on the bodies it is used for (strings, integers, booleans,
    null, datetimes: no floats), written by orjson (C) instead of the json module: ~1 ms less for
    a page of 100 orders (issue 10). orjson writes datetimes as DRF's encoder does (ISO 8601, `Z`
    for UTC, microseconds only when not zero; naive ones as UTC, see UtcJSONEncoder), ten times
    faster than Python per value; offsets of whole minutes only, which every zone has had since
    1972. What orjson does not write as DRF does goes to the encoder (decimals, dataclasses, lazy
    strings: `default`); what it refuses (an integer beyond 64 bits) and indented output
    (`; indent=`) are rendered by DRF itself, with the same encoder."""

    encoder_class = UtcJSONEncoder
    _OPTIONS = (orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_DATACLASS
                | orjson.OPT_NON_STR_KEYS)

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: dict[str, Any] | None = None) -> bytes:
        if data is None:
            return b""
        if (self.get_indent(accepted_media_type, renderer_context or {}) is not None or not self.compact
                or self.ensure_ascii):
            return super().render(data, accepted_media_type, renderer_context)
        try:
            text = orjson.dumps(data, default=self.encoder_class().default, option=self._OPTIONS)
        except (TypeError, orjson.JSONEncodeError):
            return super().render(data, accepted_media_type, renderer_context)
        # As DRF: U+2028/U+2029 escaped, so the output is a strict JavaScript subset. Both start
        # with the byte 0xE2 in UTF-8; a body without it (nearly all) is not searched twice.
        if 0xE2 not in text:
            return text
        return text.replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")


def fast_renderers() -> list[type]:
    """The configured renderers with JSON written by FastJSONRenderer (the hot read endpoints)."""
    return [FastJSONRenderer if r is JSONRenderer else r for r in api_settings.DEFAULT_RENDERER_CLASSES]


# --- OpenAPI -------------------------------------------------------------------------------------

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
    "example": {"detail": "You do not have the role this action needs."},
}
_VALIDATION_SCHEMA = {
    "type": "object",
    "description": "One list of messages per offending field (`non_field_errors` for the request as a whole); "
    "nested objects for nested fields. Nothing was written.",
    "additionalProperties": {},
    "example": {"reason": ["This field is required."]},
}
_ERRORS = {
    "401": "No or invalid credentials (`Authorization: Token <key>` or the admin session).",
    "403": "Authenticated, but the role this action needs is missing (viewer < operator < admin).",
    "404": "No such object.",
    "415": "The body is not JSON.",
    "429": "Too many requests (API_THROTTLE_ANON / API_THROTTLE_USER); see Retry-After.",
    "503": "The safety state or the database cannot be read right now; nothing was done.",
}
_WRITES = {"post", "put", "patch", "delete"}


def _reference(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def document_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: give every operation the error answers it can give,
    with their bodies, so clients (and schemathesis) know every status code they may see."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = _ERROR_SCHEMA
    schemas["ValidationError"] = _VALIDATION_SCHEMA
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            params = operation.get("parameters", [])
            # Filters and `limit`/`offset` are validated: a bad one is a 400 too.
            filtered = any(p.get("in") == "query" for p in params)
            if method in _WRITES or filtered:
                responses.setdefault("400", {"description": "Invalid input: one message list per field.",
                                             "content": _reference("ValidationError")})
            codes = ["401", "403", "429", "503"]
            if any(p.get("in") == "path" for p in params):
                codes.append("404")
            if method in _WRITES and "requestBody" in operation:
                codes.append("415")
            for code in codes:
                responses.setdefault(code, {"description": _ERRORS[code], "content": _reference("Error")})
    return result


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 for every URL: JSON under /api/ (what an API client parses), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)
