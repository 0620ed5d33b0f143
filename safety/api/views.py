from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view, inline_serializer
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from safety.api.serializers import (
    AuditEventSerializer,
    BreakerFilterSerializer,
    BreakerResetSerializer,
    CircuitBreakerEventSerializer,
    CircuitBreakerStateSerializer,
    KillSwitchActivateSerializer,
    KillSwitchDeactivateSerializer,
    KillSwitchEventSerializer,
    KillSwitchStateSerializer,
    RiskLimitSerializer,
)
from safety.models import AuditEvent, CircuitBreakerEvent, KillSwitchEvent, RiskLimit
from safety.services.breakers import breaker_reset, breaker_states_list
from safety.services.kill_switch import kill_switch_disengage, kill_switch_engage, kill_switch_read_db
from safety.services.risk import risk_limit_set
from tinywindow.api import FilteredListView
from tinywindow.permissions import ADMIN, OPERATOR, actor_name, client_address


def _optional_body(request: Request) -> dict:
    """The JSON body, or {} when there is none (a bare `curl -X DELETE` with a JSON content type)."""
    if not request.body.strip():
        return {}
    return request.data


def _state_body(view) -> dict:
    body = asdict(view)
    body.pop("source_of_truth", None)
    return body


class KillSwitchView(APIView):
    """The kill switch: GET the state, POST to activate, DELETE to deactivate."""

    write_roles = {"POST": OPERATOR, "DELETE": ADMIN}
    loopback_always_allowed = ("POST",)
    unthrottled_methods = ("POST",)  # the big red button never answers 429 (tinywindow.throttling)

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
        serializer = KillSwitchDeactivateSerializer(data=_optional_body(request))
        serializer.is_valid(raise_exception=True)
        view = kill_switch_disengage(
            actor=actor_name(request), source=client_address(request), reason=serializer.validated_data["reason"]
        )
        return Response(_state_body(view))


class KillSwitchEventList(generics.ListAPIView):
    queryset = KillSwitchEvent.objects.all()
    serializer_class = KillSwitchEventSerializer


@extend_schema(parameters=[BreakerFilterSerializer])
class CircuitBreakerList(FilteredListView):
    """The breakers with their state (one row per breaker and target: per agent, exchange or
    symbol), a page at a time; `state=OPEN` lists the ones that stop trading now."""

    serializer_class = CircuitBreakerStateSerializer
    filter_serializer_class = BreakerFilterSerializer
    selector = breaker_states_list


class CircuitBreakerReset(APIView):
    write_roles = {"POST": OPERATOR}

    @extend_schema(
        request=BreakerResetSerializer, responses={200: inline_serializer("BreakerResetResult", {
            "reset": serializers.ListField(child=serializers.CharField())})},
        examples=[OpenApiExample("All", value={"reason": "Market conditions stabilized"}, request_only=True)],
        description="Close circuit breakers by hand (all, or one by name). A reason is required.",
    )
    def post(self, request: Request) -> Response:
        serializer = BreakerResetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reset = breaker_reset(reason=serializer.validated_data["reason"], name=serializer.validated_data.get("name"),
                              actor=actor_name(request), source=client_address(request))
        return Response({"reset": reset})


class CircuitBreakerEventList(generics.ListAPIView):
    queryset = CircuitBreakerEvent.objects.all()
    serializer_class = CircuitBreakerEventSerializer


@extend_schema_view(post=extend_schema(
    responses={200: RiskLimitSerializer},
    description="Create or replace the limits of `agent` (null: the global row, every agent's default). Admin "
    "only. A field left out or null means no limit of that kind.",
    examples=[OpenApiExample("Global limits", request_only=True, value={
        "agent": None, "max_order_notional": "50000", "max_position_notional": "100000",
        "max_gross_exposure": "250000", "max_open_orders": 50, "max_orders_per_minute": 120, "price_band": "0.05"})],
))
class RiskLimitList(generics.ListCreateAPIView):
    """Risk limits: the row without an agent is every agent's default. POST creates or replaces
    the row of `agent` (null for the global row)."""

    queryset = RiskLimit.objects.select_related("agent").order_by("id")
    serializer_class = RiskLimitSerializer
    write_roles = {"POST": ADMIN}
    pagination_class = None

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        limit = risk_limit_set(values=serializer.validated_data, actor=actor_name(request),
                               source=client_address(request))
        return Response(RiskLimitSerializer(limit).data)


class AuditEventList(generics.ListAPIView):
    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
