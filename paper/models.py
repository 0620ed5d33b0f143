"""The paper venue's own books: its orders, its trades (`paper_orders`) and its balances.

The venue is a simulated exchange. It knows orders by the client's `client_order_id`
(unique, so a re-sent order is recognised) and reports trades with its own trade ids.
`paper_orders` holds one row per paper trade with the realized `pnl` it produced, which is
what the runbook's "View Paper Trades" and "Portfolio Summary" queries read.

Balances are per account (one per agent, `agent-<id>`, or one per API key of the local
exchange), per asset: `free` can be spent, `locked` is held by open orders. The venue keeps
`locked` equal to the sum of its open orders' `locked_amount` (see paper.services.balances).
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
    # Why the venue refused it, as a code the gateways map to exceptions (InsufficientFunds...).
    reject_code = models.CharField(max_length=32, blank=True, default="")
    # What this order holds of the account's balance until it ends (quote for buys, base for sells).
    locked_asset = models.CharField(max_length=16, blank=True, default="")
    locked_amount = DecimalAmount(default=ZERO)
    # True once the order has sat on the book: every later fill of a limit order is a maker fill.
    rested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "paper_venue_orders"
        indexes = [
            models.Index(fields=["status"], name="paper_venue_open_idx", condition=models.Q(status="open")),
            models.Index(fields=["account", "symbol"], name="paper_venue_account_idx"),
        ]

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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "paper_orders"
        ordering = ["-created_at"]
        indexes = [
            # The runbook's "View Paper Trades" (a range on created_at) and "Portfolio Summary" (pnl
            # summed over 30 days): with pnl in the index the summary is an index-only scan, no heap
            # visit per trade (issue 10's runbook_queries bench: 82 -> a few ms at 1M trades).
            models.Index(fields=["created_at"], include=["pnl"], name="paper_orders_created_pnl_idx"),
        ]


class PaperAccount(models.Model):
    """One account at the paper venue; created (and funded) once, so seeding is idempotent."""

    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "paper_accounts"

    def __str__(self) -> str:
        return self.name


class PaperBalance(models.Model):
    """What an account holds of one asset: `free` to spend, `locked` by its open orders."""

    account = models.CharField(max_length=100)
    asset = models.CharField(max_length=16)
    free = DecimalAmount(default=ZERO)
    locked = DecimalAmount(default=ZERO)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "paper_balances"
        ordering = ["account", "asset"]
        constraints = [
            models.UniqueConstraint(fields=["account", "asset"], name="paper_balances_unique_account_asset"),
            models.CheckConstraint(condition=models.Q(free__gte=0), name="paper_balances_free_nonnegative"),
            models.CheckConstraint(condition=models.Q(locked__gte=0), name="paper_balances_locked_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"{self.account} {self.asset}: {self.free} free, {self.locked} locked"

    @property
    def total(self):
        return self.free + self.locked
