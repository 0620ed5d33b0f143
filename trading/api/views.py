"""The trading API: agents (read, create, change, pause/resume/stop, delete), orders, fills,
positions, portfolio snapshots, agent performance, and the desk's status.

Views stay thin: selectors read, trading.services.agents writes (validated, audited, the beat
schedule kept in step). Roles come from tinywindow.permissions.RolePermission: reads need a
viewer, `write_roles` names the role of each write.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import IntegrityError
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from tinywindow.api import FilteredListView, fast_renderers, query_filters
from tinywindow.exceptions import ValidationError
from tinywindow.permissions import ADMIN, OPERATOR, actor_name, client_address
from tinywindow.rows import PagedQuery
from tinywindow.status import system_status
from tinywindow.throttling import CursorPagination
from trading.api.serializers import (
    ORDER_ROWS,
    AgentFilterSerializer,
    AgentPerformanceSerializer,
    AgentSerializer,
    AgentStatusChangeSerializer,
    AgentWriteSerializer,
    FillFilterSerializer,
    FillSerializer,
    OrderFilterSerializer,
    OrderSerializer,
    PerformanceFilterSerializer,
    PortfolioSnapshotSerializer,
    PortfolioSnapshotSummarySerializer,
    PositionFilterSerializer,
    PositionSerializer,
    SnapshotFilterSerializer,
    SystemStatusSerializer,
    system_status_body,
)
from trading.models import Agent, AgentStatus, Order, PortfolioSnapshot
from trading.selectors import (
    agent_performance_list,
    agents_list,
    fills_list,
    orders_list,
    portfolio_snapshot_latest,
    portfolio_snapshots_list,
    positions_list,
)
from trading.services.agents import UPDATABLE_FIELDS, agent_create, agent_delete, agent_set_status, agent_update

T = TypeVar("T")

AGENT_EXAMPLE = {
    "name": "sma-btc-fast", "strategy": "trading.strategies.sma_cross.SmaCross",
    "params": {"fast": 5, "slow": 20, "exposure": "0.5"}, "symbols": ["BTC/USDT"], "capital": "10000",
    "timeframe": "5s", "tick_seconds": 5, "exchange": "paper", "feed": "synthetic", "mode": "paper",
}
REASON_EXAMPLE = OpenApiExample("With a reason", value={"reason": "Spread too wide, waiting for the open"},
                                request_only=True)
ERROR_EXAMPLE = OpenApiExample(
    "Unknown strategy", status_codes=["400"], response_only=True,
    value={"strategy": ["strategy module 'trading.strategies.nope' does not exist"]})


def _service(call: Callable[[], T]) -> T:
    """Run an agent service; its ValidationError becomes a 400 on the field it names. A strategy
    parameter's error (field `fast`, `period`, ...) is reported under `params`."""
    try:
        return call()
    except ValidationError as exc:
        field = exc.field if exc.field in (*UPDATABLE_FIELDS, "agent") else ("params" if exc.field else
                                                                             "non_field_errors")
        raise serializers.ValidationError({field: [exc.message]}) from exc


# --- agents --------------------------------------------------------------------------------------


@extend_schema_view(get=extend_schema(
    parameters=[AgentFilterSerializer], operation_id="agents_list",
    description="Agents with their performance and beat schedule, by id, a page at a time "
    "(`limit`, `offset`; `count` is the number of agents that match)."))
class AgentListCreate(FilteredListView):
    """Agents: list them (viewer), a page at a time as every other list (all at once was 1.9 s and
    4.7 MB at 10,000 agents); create one (admin)."""

    write_roles = {"POST": ADMIN}
    serializer_class = AgentSerializer
    filter_serializer_class = AgentFilterSerializer
    selector = agents_list

    @extend_schema(
        request=AgentWriteSerializer, responses={201: AgentSerializer}, operation_id="agents_create",
        description="Create an active agent and its beat schedule. Admin only. Invalid input (an unknown "
        "strategy, symbol, feed or parameter) is a 400 naming the field; nothing is written.",
        examples=[OpenApiExample("SMA crossover on BTC", value=AGENT_EXAMPLE, request_only=True), ERROR_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        serializer = AgentWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            agent = _service(lambda: agent_create(**serializer.validated_data, actor=actor_name(request),
                                                  source=client_address(request)))
        except IntegrityError as exc:  # the same name created by someone else a moment ago
            raise serializers.ValidationError({"name": ["an agent with this name already exists"]}) from exc
        return Response(AgentSerializer(agents_list().get(pk=agent.pk)).data, status=status.HTTP_201_CREATED)


class AgentDetail(APIView):
    """One agent: read (viewer), change or delete (admin)."""

    write_roles = {"PATCH": ADMIN, "DELETE": ADMIN}

    @extend_schema(responses=AgentSerializer, operation_id="agents_retrieve")
    def get(self, request: Request, pk: int) -> Response:
        return Response(AgentSerializer(get_object_or_404(agents_list(), pk=pk)).data)

    @extend_schema(
        request=AgentWriteSerializer(partial=True), responses=AgentSerializer, operation_id="agents_update",
        description="Change an agent's definition (any subset of the fields); its schedule follows. Admin only. "
        "Refused (400) while it would orphan a position or an open order. The status changes through "
        "pause/resume/stop.",
        examples=[OpenApiExample("Slower ticks", value={"tick_seconds": 30}, request_only=True)],
    )
    def patch(self, request: Request, pk: int) -> Response:
        agent = get_object_or_404(Agent, pk=pk)
        serializer = AgentWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        _service(lambda: agent_update(agent=agent, actor=actor_name(request), source=client_address(request),
                                      **serializer.validated_data))
        return Response(AgentSerializer(agents_list().get(pk=agent.pk)).data)

    @extend_schema(responses={204: None}, operation_id="agents_destroy",
                   description="Delete an agent that never traded, with its schedule. Admin only. An agent with "
                   "orders or positions keeps its history: stop it instead (400).")
    def delete(self, request: Request, pk: int) -> Response:
        agent = get_object_or_404(Agent, pk=pk)
        _service(lambda: agent_delete(agent=agent, actor=actor_name(request), source=client_address(request)))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AgentStatusChange(APIView):
    """POST /api/agents/{id}/pause|resume|stop (operator)."""

    write_roles = {"POST": OPERATOR}
    target: str = AgentStatus.PAUSED

    @extend_schema(request=AgentStatusChangeSerializer, responses=AgentSerializer, examples=[REASON_EXAMPLE],
                   parameters=[OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH,
                                                description="Agent id.")],
                   description="Pause (no new ticks), resume (active again) or stop (out of service) an agent. "
                   "Operator or admin. Positions and open orders stay as they are. Audited.")
    def post(self, request: Request, pk: int) -> Response:
        agent = get_object_or_404(Agent, pk=pk)
        serializer = AgentStatusChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        _service(lambda: agent_set_status(agent=agent, status=self.target, actor=actor_name(request),
                                          source=client_address(request),
                                          reason=serializer.validated_data["reason"]))
        return Response(AgentSerializer(agents_list().get(pk=agent.pk)).data)


# --- trading records (read-only) -------------------------------------------------------------------


# /api/orders/'s pages of ORDER_ROWS (orders_list's filters), their SQL compiled once per shape.
ORDER_PAGES = PagedQuery(Order, lambda **filters: orders_list(base=ORDER_ROWS.base, **filters))


@extend_schema(parameters=[OrderFilterSerializer],
               description="Orders, newest first. Filters combine; `created_after` is inclusive, "
               "`created_before` exclusive. Paginated with `limit` (default 100, at most 1000) and a cursor: "
               "follow `next` (and `previous`); there is no total count (a COUNT over millions of orders "
               "costs more than the page), and `offset` is refused.")
class OrderList(FilteredListView):
    serializer_class = OrderSerializer  # the schema; rows are written by ORDER_ROWS, value for value the same
    pagination_class = CursorPagination  # newest first: -created_at, -id
    renderer_classes = fast_renderers()
    cursor_position = staticmethod(ORDER_ROWS.position("created_at"))
    filter_serializer_class = OrderFilterSerializer
    selector = orders_list
    filter_names = {"agent": "agent_id"}

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Tuples from values_list() and a hand-written row writer: no model instance, no
        # field object per column (the ModelSerializer cost ~0.7 ms a row; issue 10); the
        # page's SQL compiled once per shape of filters and cursor (ORDER_PAGES).
        filters = query_filters(self, self.filter_serializer_class)
        rows = ORDER_PAGES.where(**{self.filter_names.get(k, k): v for k, v in filters.items()})
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(ORDER_ROWS.rows(page))


class OrderDetail(generics.RetrieveAPIView):
    serializer_class = OrderSerializer
    queryset = Order.objects.select_related("agent")


@extend_schema(parameters=[FillFilterSerializer], description="Fills (executions), newest first.")
class FillList(FilteredListView):
    serializer_class = FillSerializer
    filter_serializer_class = FillFilterSerializer
    selector = fills_list
    filter_names = {"agent": "agent_id", "order": "order_id"}


@extend_schema(parameters=[PositionFilterSerializer],
               description="Net position per agent and symbol (average cost, realized PnL and fees).")
class PositionList(FilteredListView):
    serializer_class = PositionSerializer
    filter_serializer_class = PositionFilterSerializer
    selector = positions_list
    filter_names = {"agent": "agent_id", "open": "open_only"}


@extend_schema(parameters=[SnapshotFilterSerializer],
               description="Portfolio snapshots (the runbook's Position Summary), newest first: their totals. One "
               "snapshot's positions and per-agent books are at /api/portfolio-snapshots/{id}/ (the newest: "
               "/api/portfolio-snapshots/latest/); they hold a row per agent, too much for a page of 100.")
class PortfolioSnapshotList(FilteredListView):
    serializer_class = PortfolioSnapshotSummarySerializer
    filter_serializer_class = SnapshotFilterSerializer
    selector = functools.partial(portfolio_snapshots_list, totals_only=True)


@extend_schema(description="One portfolio snapshot with its positions and per-agent books.")
class PortfolioSnapshotDetail(generics.RetrieveAPIView):
    serializer_class = PortfolioSnapshotSerializer
    queryset = PortfolioSnapshot.objects.all()


@extend_schema(description="The newest portfolio snapshot with its positions and per-agent books; 404 before the "
               "first one (the default worker takes one a minute).")
class PortfolioSnapshotLatest(generics.RetrieveAPIView):
    serializer_class = PortfolioSnapshotSerializer

    def get_object(self) -> PortfolioSnapshot:
        snapshot = portfolio_snapshot_latest()
        if snapshot is None:
            raise NotFound("No portfolio snapshot yet.")
        return snapshot


@extend_schema(parameters=[PerformanceFilterSerializer],
               description="Per-agent performance over its window (the runbook's Agent Performance).")
class AgentPerformanceList(FilteredListView):
    serializer_class = AgentPerformanceSerializer
    filter_serializer_class = PerformanceFilterSerializer
    selector = agent_performance_list
    filter_names = {"agent": "agent_id"}


# --- the desk's status --------------------------------------------------------------------------


class SystemStatusView(APIView):
    renderer_classes = fast_renderers()

    @extend_schema(
        responses={200: SystemStatusSerializer, 503: OpenApiResponse(description="The safety state cannot be read.")},
        operation_id="status_retrieve",
        description="One look at the desk: PAPER/LIVE, the kill switch, the breakers (aggregate and the ones not "
        "closed), agents by status, the latest portfolio snapshot (equity, PnL) and the open orders.",
        examples=[OpenApiExample("Quiet paper desk", response_only=True, value={
            "mode": "PAPER",
            "kill_switch": {"active": False, "mode": "", "reason": "", "actor": "", "changed_at": None},
            "circuit_breakers": {"status": "CLOSED", "open": []},
            "agents": {"active": 3, "paused": 0, "stopped": 0, "total": 3},
            "latest_snapshot": None, "open_orders": 0, "at": "2025-01-01T12:00:00Z"})],
    )
    def get(self, request: Request) -> Response:
        # SystemStatusSerializer's output, built by hand (trading.api.serializers.RowSerializer).
        return Response(system_status_body(system_status()))


class ApiRoot(APIView):
    """GET /api/: where everything is (the README's "API" link)."""

    ENDPOINTS = ("status", "agents", "orders", "fills", "positions", "portfolio-snapshots", "agent-performance",
                 "kill-switch", "kill-switch-events", "circuit-breakers", "circuit-breakers-reset",
                 "circuit-breaker-events", "risk-limits", "audit", "schema", "docs")

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        return Response({name: reverse(name, request=request) for name in self.ENDPOINTS})
