from django.contrib import admin

from paper.models import PaperOrder, PaperVenueOrder
from trading.admin import ReadOnlyAdmin


@admin.register(PaperOrder)
class PaperOrderAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "trade_id", "client_order_id", "symbol", "side", "quantity", "price", "fee", "pnl")
    list_filter = ("symbol", "side")


@admin.register(PaperVenueOrder)
class PaperVenueOrderAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "client_order_id", "symbol", "side", "order_type", "quantity", "status")
    list_filter = ("status", "symbol")
