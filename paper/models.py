"""The paper venue's own books: its orders and its trades (`paper_orders`).

The venue is a simulated exchange. It knows orders by the client's `client_order_id`
(unique, so a re-sent order is recognised) and reports trades with its own trade ids.
`paper_orders` holds one row per paper trade with the realized `pnl` it produced, which is
what the runbook's "View Paper Trades" and "Portfolio Summary" queries read.
"""

from __future__ import annotations

from django.db import models

from tinywindow.fields import ZERO, DecimalAmount


class PaperVenueOrder(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        FILLED = "filled"
        CANCELLED = "cancelled"
        REJECTED = "rejected"

    client_order_id = models.CharField(max_length=64, unique=True)
    account = models.CharField(max_length=100)
    symbol = models.CharField(max_length=40)
    side = models.CharField(max_length=4)
    order_type = models.CharField(max_length=8)
    quantity = DecimalAmount()
    price = DecimalAmount(null=True, blank=True)
    filled_quantity = DecimalAmount(default=ZERO)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    reject_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "paper_venue_orders"

    @property
    def venue_order_id(self) -> str:
        return f"P{self.pk}"


class PaperOrder(models.Model):
    """One paper trade (a fill at the paper venue)."""

    venue_order = models.ForeignKey(PaperVenueOrder, on_delete=models.PROTECT, related_name="trades")
    trade_id = models.CharField(max_length=64, unique=True)
    client_order_id = models.CharField(max_length=64, db_index=True)
    account = models.CharField(max_length=100)
    symbol = models.CharField(max_length=40)
    side = models.CharField(max_length=4)
    quantity = DecimalAmount()
    price = DecimalAmount()
    fee = DecimalAmount(default=ZERO)
    fee_currency = models.CharField(max_length=16, default="")
    liquidity = models.CharField(max_length=5, default="taker")
    slippage_bps = DecimalAmount(default=ZERO)
    pnl = DecimalAmount(null=True, blank=True, help_text="Realized PnL of this trade, fees included.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "paper_orders"
        ordering = ["-created_at"]
