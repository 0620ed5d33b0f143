from django.contrib import admin

from paper.models import PaperAccount, PaperBalance, PaperOrder, PaperVenueOrder
from trading.admin import ReadOnlyAdmin


@admin.register(PaperOrder)
class PaperOrderAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "trade_id", "client_order_id", "symbol", "side", "quantity", "price", "fee", "pnl")
    list_filter = ("symbol", "side")


@admin.register(PaperVenueOrder)
class PaperVenueOrderAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "client_order_id", "account", "symbol", "side", "order_type", "quantity",
                    "filled_quantity", "status")
    list_filter = ("status", "symbol")


@admin.register(PaperAccount)
class PaperAccountAdmin(ReadOnlyAdmin):
    list_display = ("name", "created_at")


@admin.register(PaperBalance)
class PaperBalanceAdmin(ReadOnlyAdmin):
    list_display = ("account", "asset", "free", "locked", "updated_at")
    list_filter = ("asset",)
    search_fields = ("account",)
