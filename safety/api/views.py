from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from safety.api.serializers import (
    KillSwitchActivateSerializer,
    KillSwitchDeactivateSerializer,
    KillSwitchEventSerializer,
    KillSwitchStateSerializer,
)
from safety.models import KillSwitchEvent
from safety.services.kill_switch import kill_switch_disengage, kill_switch_engage, kill_switch_read_db
from tinywindow.permissions import ADMIN, OPERATOR, actor_name, client_address


def _state_body(view) -> dict:
    body = asdict(view)
    body.pop("source_of_truth", None)
    return body


class KillSwitchView(APIView):
    """The kill switch: GET the state, POST to activate, DELETE to deactivate."""

    write_roles = {"POST": OPERATOR, "DELETE": ADMIN}
    loopback_always_allowed = ("POST",)

    @extend_schema(responses=KillSwitchStateSerializer)
    def get(self, request: Request) -> Response:
        return Response(_state_body(kill_switch_read_db()))

    @extend_schema(
        request=KillSwitchActivateSerializer,
        responses={200: KillSwitchStateSerializer},
        examples=[OpenApiExample("Halt", value={"mode": "HALT_ONLY", "reason": "Emergency stop"}, request_only=True)],
        description="Activate. Returns after PostgreSQL and Redis hold the new state; from then on no order "
        "reaches a venue. Allowed without credentials from loopback.",
    )
    def post(self, request: Request) -> Response:
        serializer = KillSwitchActivateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        view = kill_switch_engage(
            mode=serializer.validated_data["mode"], reason=serializer.validated_data["reason"],
            actor=actor_name(request), source=client_address(request),
        )
        return Response(_state_body(view))

    @extend_schema(request=KillSwitchDeactivateSerializer, responses={200: KillSwitchStateSerializer})
    def delete(self, request: Request) -> Response:
        serializer = KillSwitchDeactivateSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        view = kill_switch_disengage(
            actor=actor_name(request), source=client_address(request), reason=serializer.validated_data["reason"]
        )
        return Response(_state_body(view))


class KillSwitchEventList(generics.ListAPIView):
    queryset = KillSwitchEvent.objects.all()
    serializer_class = KillSwitchEventSerializer
