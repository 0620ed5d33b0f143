"""Serializers of the trading API: what goes out (read models) and what may come in (agent
definitions, query filters). Domain rules live in trading.services.agents.agent_validate; these
check only shapes and bounds, so a bad request is a 400 before any service runs."""

from __future__ import annotations

import decimal
import functools
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, tzinfo
from typing import Any

from django.db import models
from django.db.models import QuerySet
from django.db.models.functions import Cast
from django.utils import timezone
from rest_framework import serializers

from safety.api.serializers import CircuitBreakerStateSerializer, KillSwitchStateSerializer
from safety.services.kill_switch import MAX_REASON_LENGTH
from tinywindow.fields import DECIMAL_PLACES, MAX_DIGITS
from trading.models import (
    Agent,
    AgentPerformance,
    AgentStatus,
    Fill,
    Order,
    OrderOrigin,
    OrderSide,
    PortfolioSnapshot,
    Position,
    TradingMode,
)
from trading.order_states import OrderStatus

# Only TinyWindow's own strategies may be named through the API: loading a strategy imports its
# module, and importing runs the module's code (trading.strategies.base.load_strategy).
STRATEGY_PREFIX = "trading.strategies."
MAX_ID = 2**63 - 1  # PostgreSQL bigint


# --- read models ---------------------------------------------------------------------------------


class AgentPerformanceSerializer(serializers.ModelSerializer):
    agent_name = serializers.CharField(source="agent.name", read_only=True)

    class Meta:
        model = AgentPerformance
        fields = ["agent", "agent_name", "window_start", "window_end", "trades", "win_rate", "sharpe_ratio",
                  "sortino_ratio", "max_drawdown", "profit_factor", "total_pnl", "exposure_time", "equity_points",
                  "updated_at"]


class AgentPerformanceBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = AgentPerformance
        fields = ["window_start", "window_end", "trades", "win_rate", "sharpe_ratio", "sortino_ratio", "max_drawdown",
                  "profit_factor", "total_pnl", "exposure_time", "updated_at"]


class AgentScheduleSerializer(serializers.Serializer):
    """The agent's django-celery-beat PeriodicTask (`tick-agent-<id>`): enabled only while active."""

    name = serializers.CharField()
    enabled = serializers.BooleanField()
    every_seconds = serializers.IntegerField(source="interval.every", allow_null=True)
    queue = serializers.CharField(allow_null=True)
    last_run_at = serializers.DateTimeField(allow_null=True)
    total_run_count = serializers.IntegerField()


class AgentSerializer(serializers.ModelSerializer):
    performance = AgentPerformanceBriefSerializer(read_only=True, allow_null=True)
    schedule = AgentScheduleSerializer(source="periodic_task", read_only=True, allow_null=True)

    class Meta:
        model = Agent
        fields = ["id", "name", "strategy", "params", "symbols", "timeframe", "exchange", "feed", "mode", "status",
                  "capital", "tick_seconds", "last_tick_at", "last_decision", "created_at", "updated_at",
                  "performance", "schedule"]
        read_only_fields = fields


class OrderSerializer(serializers.ModelSerializer):
    agent_name = serializers.CharField(source="agent.name", read_only=True)

    class Meta:
        model = Order
        fields = ["id", "client_order_id", "agent", "agent_name", "exchange", "mode", "symbol", "side", "order_type",
                  "quantity", "price", "reduce_only", "origin", "status", "filled_quantity", "average_fill_price",
                  "fee", "pnl", "reference_price", "decision_reason", "reject_reason", "venue_order_id",
                  "created_at", "updated_at", "submitted_at", "closed_at"]
        read_only_fields = fields


# --- hand-written read paths (issue 10) ----------------------------------------------------------
# The hot reads (/api/orders/, /api/status) build their JSON from `values_list()` rows and plain
# dicts: DRF's ModelSerializer costs ~0.7 ms a row (a model instance per row, a field object per
# column, deep-copied fields per request). The output is the serializers' own, value for value
# (tests/integration/test_api.py pins it against them); the serializers above stay the schema.


def decimal_repr(decimal_places: int, max_digits: int) -> Callable[[decimal.Decimal], str]:
    """DRF's DecimalField.to_representation (COERCE_DECIMAL_TO_STRING, the default): quantized to
    `decimal_places` within `max_digits` of precision, written without an exponent."""
    exponent = decimal.Decimal(".1") ** decimal_places
    context = decimal.getcontext().copy()
    context.prec = max_digits

    def represent(value: decimal.Decimal) -> str:
        return f"{value.quantize(exponent, context=context):f}"

    return represent


def _is_utc(zone: tzinfo) -> bool:
    return getattr(zone, "key", None) == "UTC" or zone is UTC


def datetime_repr() -> Callable[[datetime], str]:
    """DRF's DateTimeField.to_representation (ISO 8601, the default): in the current time zone,
    `Z` for UTC. A naive value is UTC (RowSerializer reads timestamps `AT TIME ZONE 'UTC'`). Made
    once per response (the current time zone is per request)."""
    zone = timezone.get_current_timezone()
    utc = _is_utc(zone)

    def represent(value: datetime) -> str:
        if value.tzinfo is None:
            if utc:
                return value.isoformat() + "Z"
            value = value.replace(tzinfo=UTC)
        text = value.astimezone(zone).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return represent


class _AtUtc(models.Func):
    """`column AT TIME ZONE 'UTC'`: a naive UTC timestamp, which psycopg's C loader reads several
    times faster than a timestamptz (Django's time-zone loader for those is pure Python)."""

    template = "(%(expressions)s AT TIME ZONE 'UTC')"
    output_field = models.DateTimeField()


class RowSerializer:
    """A serializer's output for rows read with `values_list()` (tuples), as its fields write them.

    Decimals are read as text: a numeric(max_digits, decimal_places) column's text is exactly what
    DRF writes (quantized to decimal_places, no exponent), so no Decimal is made per value.
    Datetimes are read as naive UTC and written as DRF does. None stays None (as DRF does)."""

    def __init__(self, model: type[models.Model], fields: list[str], lookups: dict[str, str]) -> None:
        self.model = model
        self.fields = fields
        self.lookups: list[Any] = []
        self.decimals: list[tuple[int, Callable[[Any], str]]] = []
        self.datetimes: list[int] = []
        for index, name in enumerate(fields):
            if name in lookups:
                self.lookups.append(lookups[name])
                continue
            field = model._meta.get_field(name)
            if isinstance(field, models.DecimalField):
                self.decimals.append((index, decimal_repr(field.decimal_places, field.max_digits)))
                self.lookups.append(Cast(name, models.TextField()))
            elif isinstance(field, models.DateTimeField):
                self.datetimes.append(index)
                self.lookups.append(_AtUtc(name))
            else:
                self.lookups.append(name)

    @functools.cached_property
    def base(self) -> QuerySet:
        """Every row, as values_list() tuples: built (its expressions resolved) once per process;
        each request filters a clone of it (QuerySets are immutable, clones are thread-safe)."""
        return self.model._default_manager.values_list(*self.lookups)

    def position(self, name: str) -> Callable[[tuple], str]:
        """A cursor position (ISO 8601, UTC) of field `name` of a row (tinywindow.throttling.CursorPagination)."""
        index = self.fields.index(name)
        return lambda row: row[index].replace(tzinfo=UTC).isoformat()

    def rows(self, rows: Iterable[tuple]) -> list[dict[str, Any]]:
        """Dicts of rows read through `base` (decimals already text), ready for
        tinywindow.api.FastJSONRenderer: in UTC (the desk's only time zone, settings.TIME_ZONE) the
        datetimes are left to it, which writes them as DRF does in C, so a row is one dict() and
        nothing else."""
        names = self.fields
        if _is_utc(timezone.get_current_timezone()):
            return [dict(zip(names, row, strict=True)) for row in rows]
        when, datetimes = datetime_repr(), self.datetimes
        out = []
        for row in rows:
            values = list(row)
            for index in datetimes:
                if values[index] is not None:
                    values[index] = when(values[index])
            out.append(dict(zip(names, values, strict=True)))
        return out

    def instance(self, instance: models.Model) -> dict[str, Any]:
        """The same dict for a model instance (its Decimals written as DRF writes them)."""
        values = [getattr(instance, name) for name in self.fields]
        for index, represent in self.decimals:
            if values[index] is not None:
                values[index] = represent(values[index])
        return self.rows([values])[0]


# OrderSerializer's fields; `agent` is the id, `agent_name` the agent's (one join, no instances).
ORDER_ROWS = RowSerializer(Order, OrderSerializer.Meta.fields, {"agent": "agent_id", "agent_name": "agent__name"})


class FillSerializer(serializers.ModelSerializer):
    client_order_id = serializers.CharField(source="order.client_order_id", read_only=True)

    class Meta:
        model = Fill
        fields = ["id", "order", "client_order_id", "agent", "exchange", "trade_id", "symbol", "side", "quantity",
                  "price", "fee", "fee_currency", "liquidity", "realized_pnl", "executed_at", "created_at"]
        read_only_fields = fields


class PositionSerializer(serializers.ModelSerializer):
    agent_name = serializers.CharField(source="agent.name", read_only=True)

    class Meta:
        model = Position
        fields = ["id", "agent", "agent_name", "symbol", "quantity", "average_price", "realized_pnl", "fees_paid",
                  "updated_at"]
        read_only_fields = fields


class PortfolioSnapshotSerializer(serializers.ModelSerializer):
    positions = serializers.ListField(child=serializers.DictField(), read_only=True,
                                      help_text="Open positions at the snapshot (per agent and symbol), marked to "
                                                "the last price.")
    agents = serializers.ListField(child=serializers.DictField(), read_only=True,
                                   help_text="Per agent: capital, equity, cash, realized and unrealized PnL, gross "
                                             "and net exposure, open positions and orders.")

    class Meta:
        model = PortfolioSnapshot
        fields = ["id", "created_at", "equity", "cash", "gross_exposure", "net_exposure", "realized_pnl",
                  "unrealized_pnl", "peak_equity", "drawdown", "open_orders", "positions", "agents"]
        read_only_fields = fields


class PortfolioSnapshotSummarySerializer(serializers.ModelSerializer):
    """The snapshot's totals only, for /api/status and the snapshot list: the per-agent and
    per-position lists grow with the book (a row per agent: about 1.5 MB a snapshot at 10,000
    agents); they are at /api/portfolio-snapshots/{id}/ and /api/portfolio-snapshots/latest/."""

    class Meta:
        model = PortfolioSnapshot
        fields = ["id", "created_at", "equity", "cash", "gross_exposure", "net_exposure", "realized_pnl",
                  "unrealized_pnl", "peak_equity", "drawdown", "open_orders"]
        read_only_fields = fields


class BreakerSummarySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["CLOSED", "HALF_OPEN", "OPEN"],
                                     help_text="OPEN if any breaker is open, else HALF_OPEN if any is, else CLOSED.")
    open = CircuitBreakerStateSerializer(many=True, help_text="The breakers that are not CLOSED.")


class AgentCountsSerializer(serializers.Serializer):
    active = serializers.IntegerField()
    paused = serializers.IntegerField()
    stopped = serializers.IntegerField()
    total = serializers.IntegerField()


class SystemStatusSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["PAPER", "LIVE"])
    kill_switch = KillSwitchStateSerializer()
    circuit_breakers = BreakerSummarySerializer()
    agents = AgentCountsSerializer()
    latest_snapshot = PortfolioSnapshotSummarySerializer(
        allow_null=True, help_text="The latest portfolio snapshot's totals (equity, PnL, drawdown), or null before "
        "the first one; its positions and per-agent books are at /api/portfolio-snapshots/latest/.")
    open_orders = serializers.IntegerField()
    at = serializers.DateTimeField()


_SNAPSHOT_ROW = RowSerializer(PortfolioSnapshot, PortfolioSnapshotSummarySerializer.Meta.fields, {})


def system_status_body(current: Any) -> dict[str, Any]:
    """SystemStatusSerializer's output for a tinywindow.status.SystemStatus, built by hand (see
    RowSerializer); the breakers that are not closed (usually none) go through their serializer."""
    when = datetime_repr()
    kill = current.kill_switch
    snapshot = current.latest_snapshot
    return {
        "mode": current.mode,
        "kill_switch": {"active": bool(kill.active), "mode": str(kill.mode), "reason": str(kill.reason),
                        "actor": str(kill.actor), "changed_at": when(kill.changed_at) if kill.changed_at else None},
        "circuit_breakers": {
            "status": current.breaker_status,
            "open": CircuitBreakerStateSerializer(current.open_breakers, many=True).data if current.open_breakers
            else []},
        "agents": {**current.agents, "total": sum(current.agents.values())},
        "latest_snapshot": None if snapshot is None else _SNAPSHOT_ROW.instance(snapshot),
        "open_orders": current.open_orders,
        "at": when(current.at),
    }


# --- input ------------------------------------------------------------------------------------------


def _no_nul(value: Any) -> None:
    # PostgreSQL text and jsonb cannot hold U+0000: refuse it here rather than fail at the INSERT.
    if "\\u0000" in json.dumps(value):
        raise serializers.ValidationError("must not contain NUL characters")


class AgentWriteSerializer(serializers.Serializer):
    """An agent definition. On PATCH every field is optional; the status changes only through
    pause/resume/stop."""

    name = serializers.CharField(max_length=100)
    strategy = serializers.CharField(
        max_length=200, help_text="Dotted path of one of TinyWindow's strategies, e.g. "
        "`trading.strategies.sma_cross.SmaCross`, `trading.strategies.rsi_reversion.RsiReversion`, "
        "`trading.strategies.donchian_breakout.DonchianBreakout`.")
    params = serializers.DictField(required=False, default=dict, help_text="Strategy parameters; missing ones "
                                   "take the strategy's defaults, unknown ones are refused.")
    symbols = serializers.ListField(child=serializers.CharField(max_length=40), min_length=1, max_length=50,
                                    help_text="Markets of the agent's venue, e.g. `BTC/USDT`.")
    capital = serializers.DecimalField(max_digits=MAX_DIGITS, decimal_places=DECIMAL_PLACES,
                                       help_text="Capital allocated, in the quote currency; positive.")
    timeframe = serializers.CharField(max_length=8, required=False, help_text="Candle timeframe (default `5s`).")
    tick_seconds = serializers.IntegerField(min_value=1, max_value=86400, required=False,
                                            help_text="Seconds between two decisions (default 5).")
    exchange = serializers.CharField(max_length=40, required=False,
                                     help_text="`paper` (default) or a ccxt exchange id.")
    feed = serializers.CharField(max_length=40, required=False,
                                 help_text="`synthetic` (default), `replay`, `replay:<exchange>` or `ccxt:<exchange>`.")
    mode = serializers.ChoiceField(choices=TradingMode.choices, required=False,
                                   help_text="`paper` (default); `live` needs PAPER_TRADING_MODE=false.")

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                hint = "use POST /api/agents/{id}/pause, /resume or /stop" if "status" in unknown else \
                    "unknown or read-only field"
                raise serializers.ValidationError({name: [hint] for name in unknown})
        return super().to_internal_value(data)

    def validate_strategy(self, value: str) -> str:
        if not value.startswith(STRATEGY_PREFIX):
            raise serializers.ValidationError(f"must be one of TinyWindow's strategies ({STRATEGY_PREFIX}…)")
        return value

    def validate_params(self, value: dict) -> dict:
        _no_nul(value)
        return value


class AgentStatusChangeSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=MAX_REASON_LENGTH, required=False, allow_blank=True, default="",
                                   help_text="Why (kept in the audit log).")


# --- query filters ------------------------------------------------------------------------------------


class OrderFilterSerializer(serializers.Serializer):
    agent = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text="Agent id.")
    symbol = serializers.CharField(required=False, max_length=40, help_text="e.g. `BTC/USDT`.")
    status = serializers.ChoiceField(choices=OrderStatus.choices, required=False)
    side = serializers.ChoiceField(choices=OrderSide.choices, required=False)
    origin = serializers.ChoiceField(choices=OrderOrigin.choices, required=False)
    created_after = serializers.DateTimeField(required=False, help_text="Created at or after (ISO 8601).")
    created_before = serializers.DateTimeField(required=False, help_text="Created before (ISO 8601).")


class FillFilterSerializer(serializers.Serializer):
    agent = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text="Agent id.")
    order = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text="Order id.")
    symbol = serializers.CharField(required=False, max_length=40)
    executed_after = serializers.DateTimeField(required=False, help_text="Executed at or after (ISO 8601).")
    executed_before = serializers.DateTimeField(required=False, help_text="Executed before (ISO 8601).")


class PositionFilterSerializer(serializers.Serializer):
    agent = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text="Agent id.")
    symbol = serializers.CharField(required=False, max_length=40)
    open = serializers.BooleanField(required=False, default=False, help_text="Only non-zero positions.")


class SnapshotFilterSerializer(serializers.Serializer):
    created_after = serializers.DateTimeField(required=False, help_text="Taken at or after (ISO 8601).")
    created_before = serializers.DateTimeField(required=False, help_text="Taken before (ISO 8601).")


class AgentFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=AgentStatus.choices, required=False)


class PerformanceFilterSerializer(serializers.Serializer):
    agent = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text="Agent id.")
