"""API plumbing shared by every app: TinyWindow errors become HTTP answers, never a 500."""

from __future__ import annotations

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from tinywindow.exceptions import OperationalError, TinyWindowError, ValidationError


def exception_handler(exc, context):
    if isinstance(exc, ValidationError):
        field = exc.field or "non_field_errors"
        return Response({field: [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, OperationalError):
        return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    if isinstance(exc, TinyWindowError):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    return drf_exception_handler(exc, context)
