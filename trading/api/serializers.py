"""Serializers of the trading API: what goes out (read models) and what may come in (agent
definitions, query filters). Domain rules live in trading.services.agents.agent_validate; these
check only shapes and bounds, so a bad request is a 400 before any service runs."""

from __future__ import annotations

import json
from typing import Any

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


class FillSerializer(serializers.ModelSerializer):
    agent = serializers.IntegerField(source="order.agent_id", read_only=True)
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
    """The snapshot's totals only: /api/status is polled by dashboards and scripts, and the
    per-agent and per-position lists grow with the book (hundreds of KB at 1,000 agents, issue
    10's API bench); they are at /api/portfolio-snapshots/."""

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
        "the first one; its positions and per-agent books are at /api/portfolio-snapshots/.")
    open_orders = serializers.IntegerField()
    at = serializers.DateTimeField()


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
