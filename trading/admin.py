from django.contrib import admin

from trading.models import Agent, AgentPerformance, Fill, Order, PortfolioSnapshot, Position


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the system: operators read them, nobody edits them by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "strategy", "symbols", "timeframe", "exchange", "mode", "status", "capital", "last_tick_at")
    list_filter = ("status", "mode", "exchange")
    search_fields = ("name",)
    readonly_fields = ("periodic_task", "last_tick_at", "last_decision", "created_at", "updated_at")


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("client_order_id", "agent", "symbol", "side", "quantity", "status", "average_fill_price", "fee",
                    "pnl", "origin", "created_at")
    list_filter = ("status", "side", "origin", "mode", "symbol")
    search_fields = ("client_order_id", "venue_order_id")
    date_hierarchy = "created_at"


@admin.register(Fill)
class FillAdmin(ReadOnlyAdmin):
    list_display = ("trade_id", "order", "symbol", "side", "quantity", "price", "fee", "realized_pnl", "executed_at")
    list_filter = ("symbol", "side", "exchange")


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = ("agent", "symbol", "quantity", "average_price", "realized_pnl", "fees_paid", "updated_at")


@admin.register(PortfolioSnapshot)
class PortfolioSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "equity", "cash", "gross_exposure", "realized_pnl", "unrealized_pnl", "drawdown")


@admin.register(AgentPerformance)
class AgentPerformanceAdmin(ReadOnlyAdmin):
    list_display = ("agent", "trades", "win_rate", "sharpe_ratio", "total_pnl", "window_end")
