"""Trading data: agents, orders, fills, positions, snapshots and performance.

Table names used by the runbook's SQL (`orders`, `portfolio_snapshots`, `agent_performance`)
are fixed with `db_table`; indexes serve those queries.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tinywindow.fields import ZERO, DecimalAmount
from trading.order_states import OrderStatus


class TradingMode(models.TextChoices):
    PAPER = "paper"
    LIVE = "live"


class AgentStatus(models.TextChoices):
    ACTIVE = "active"
    PAUSED = "paused"
    STOPPED = "stopped"


class Agent(models.Model):
    """A strategy instance with a capital allocation, trading some symbols on one venue."""

    name = models.CharField(max_length=100, unique=True)
    strategy = models.CharField(max_length=200, help_text="Dotted path of the Strategy class.")
    params = models.JSONField(default=dict, blank=True)
    symbols = ArrayField(models.CharField(max_length=40), default=list)
    timeframe = models.CharField(max_length=8, default="5s")
    exchange = models.CharField(max_length=40, default="paper")
    feed = models.CharField(max_length=40, default="synthetic")
    mode = models.CharField(max_length=8, choices=TradingMode.choices, default=TradingMode.PAPER)
    status = models.CharField(max_length=8, choices=AgentStatus.choices, default=AgentStatus.ACTIVE)
    capital = DecimalAmount(help_text="Capital allocated to this agent, in the quote currency.")
    tick_seconds = models.PositiveIntegerField(default=5)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="agent"
    )
    last_tick_at = models.DateTimeField(null=True, blank=True)
    last_decision = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "agents"
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class OrderSide(models.TextChoices):
    BUY = "buy"
    SELL = "sell"


class OrderType(models.TextChoices):
    MARKET = "market"
    LIMIT = "limit"


class OrderOrigin(models.TextChoices):
    STRATEGY = "strategy"
    KILL_SWITCH = "kill_switch"
    MANUAL = "manual"


class Order(models.Model):
    """One order, written (status `pending`) before anything is sent to a venue."""

    # What changes after an order is created (its decision — who, what, how much — never does):
    # the fields a venue report writes (`rows_update(orders, Order.STATE_FIELDS)` in the order services).
    STATE_FIELDS = ("status", "filled_quantity", "average_fill_price", "fee", "pnl", "reject_reason",
                    "venue_order_id", "submitted_at", "closed_at", "updated_at")

    client_order_id = models.CharField(max_length=64, unique=True)
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="orders")
    exchange = models.CharField(max_length=40)
    mode = models.CharField(max_length=8, choices=TradingMode.choices)
    symbol = models.CharField(max_length=40)
    side = models.CharField(max_length=4, choices=OrderSide.choices)
    order_type = models.CharField(max_length=8, choices=OrderType.choices, default=OrderType.MARKET)
    quantity = DecimalAmount()
    price = DecimalAmount(null=True, blank=True, help_text="Limit price; empty for market orders.")
    reduce_only = models.BooleanField(default=False)
    origin = models.CharField(max_length=16, choices=OrderOrigin.choices, default=OrderOrigin.STRATEGY)
    status = models.CharField(max_length=20, choices=OrderStatus.choices, default=OrderStatus.PENDING)
    filled_quantity = DecimalAmount(default=ZERO)
    average_fill_price = DecimalAmount(null=True, blank=True)
    fee = DecimalAmount(default=ZERO)
    pnl = DecimalAmount(default=ZERO, help_text="Realized PnL of this order's fills, fees included.")
    reference_price = DecimalAmount(null=True, blank=True, help_text="Last price when the order was decided.")
    decision_reason = models.TextField(blank=True, default="")
    reject_reason = models.TextField(blank=True, default="")
    venue_order_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "orders"
        ordering = ["-created_at"]
        indexes = [
            # The API's pages (newest first, by cursor) are ordered by (created_at, id): with the id in
            # the index, a page is read in order and stops at its last row, with no sort of the rows
            # sharing a timestamp (issue 10); the same for one agent's pages.
            models.Index(fields=["created_at", "id"], name="orders_created_id_idx"),
            models.Index(fields=["status", "created_at"], name="orders_status_created_idx"),
            models.Index(fields=["symbol", "created_at"], name="orders_symbol_created_idx"),
            models.Index(fields=["agent", "created_at", "id"], name="orders_agent_created_id_idx"),
            # The runbook's "Daily P&L Summary" (executed orders of the last 7 days, pnl summed per
            # day): an index-only scan of executed orders, no heap visit per order.
            models.Index(fields=["created_at"], include=["pnl"], name="orders_executed_pnl_idx",
                         condition=Q(status="executed")),
            models.Index(
                fields=["status"],
                name="orders_open_idx",
                condition=Q(status__in=["pending", "submitted", "partially_filled"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="orders_quantity_positive"),
            models.CheckConstraint(condition=Q(filled_quantity__gte=0), name="orders_filled_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"{self.client_order_id} {self.side} {self.quantity} {self.symbol} [{self.status}]"

    @property
    def remaining_quantity(self):
        return self.quantity - self.filled_quantity


class Fill(models.Model):
    """One execution reported by a venue. Append-only; a replayed trade id is a no-op."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="fills")
    # The order's agent, copied: an agent's latest closing trades (the consecutive-losses breaker,
    # for every agent in one statement) and today's realized PnL are then one range each of an
    # index of closing fills. Read through a join with orders, their plan depended on fresh
    # statistics for `fills`: with stale ones PostgreSQL walked the whole orders primary key for
    # each agent (minutes at 200,000 orders).
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="fills", db_index=False)
    exchange = models.CharField(max_length=40)
    trade_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=40)
    side = models.CharField(max_length=4, choices=OrderSide.choices)
    quantity = DecimalAmount()
    price = DecimalAmount()
    fee = DecimalAmount(default=ZERO)
    fee_currency = models.CharField(max_length=16, blank=True, default="")
    liquidity = models.CharField(max_length=5, default="taker")
    realized_pnl = DecimalAmount(default=ZERO)
    executed_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "fills"
        ordering = ["-executed_at"]
        constraints = [models.UniqueConstraint(fields=["exchange", "trade_id"], name="fills_unique_trade")]
        indexes = [models.Index(fields=["executed_at"], name="fills_executed_at_idx"),
                   # Closing trades only: an agent that only buys has none to walk past.
                   models.Index(fields=["agent", "-executed_at", "-id"], name="fills_agent_closing_idx",
                                condition=~models.Q(realized_pnl=0))]


class Position(models.Model):
    """Net position of one agent in one symbol; updated only under a row lock."""

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="positions")
    symbol = models.CharField(max_length=40)
    quantity = DecimalAmount(default=ZERO)
    average_price = DecimalAmount(default=ZERO, help_text="Average cost per unit, buy fees included.")
    realized_pnl = DecimalAmount(default=ZERO)
    fees_paid = DecimalAmount(default=ZERO)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "positions"
        constraints = [models.UniqueConstraint(fields=["agent", "symbol"], name="positions_unique_agent_symbol")]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.symbol} {self.quantity} @ {self.average_price}"


class PortfolioSnapshot(models.Model):
    """The whole book at one moment (beat, every RISK_SNAPSHOT_SECONDS)."""

    equity = DecimalAmount()
    cash = DecimalAmount()
    gross_exposure = DecimalAmount()
    net_exposure = DecimalAmount()
    realized_pnl = DecimalAmount()
    unrealized_pnl = DecimalAmount()
    peak_equity = DecimalAmount()
    drawdown = DecimalAmount(help_text="Fraction below peak equity, 0..1.")
    open_orders = models.PositiveIntegerField(default=0)
    positions = models.JSONField(default=list, help_text="Per agent and symbol: quantity, average price, mark "
                                 "price, unrealized PnL, market value.")
    agents = models.JSONField(default=list, help_text="Per agent: capital, realized and unrealized PnL, equity, "
                              "exposure, open orders (the agent-performance task reads its equity series here).")
    # Not auto_now_add: the service passes its `now`, so a snapshot is stamped with the time it
    # was valued at (and tests can write backdated rows for thinning and performance).
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        db_table = "portfolio_snapshots"
        ordering = ["-created_at"]


class AgentPerformance(models.Model):
    """Per-agent performance over a stated window (the runbook's "Agent Performance")."""

    agent = models.OneToOneField(Agent, on_delete=models.CASCADE, related_name="performance")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    trades = models.PositiveIntegerField(default=0, help_text="Closed trades: orders that realized PnL.")
    win_rate = DecimalAmount(null=True, blank=True, help_text="Winning trades / trades, 0..1.")
    sharpe_ratio = DecimalAmount(null=True, blank=True, help_text="Annualised (365-day year), from equity returns.")
    sortino_ratio = DecimalAmount(null=True, blank=True, help_text="Annualised, downside deviation over all periods.")
    max_drawdown = DecimalAmount(null=True, blank=True, help_text="Largest fall of equity from its peak, 0..1.")
    profit_factor = DecimalAmount(null=True, blank=True, help_text="Gross profit / gross loss of the trades.")
    total_pnl = DecimalAmount(default=ZERO, help_text="Realized PnL of the trades in the window, fees included.")
    exposure_time = DecimalAmount(null=True, blank=True, help_text="Fraction of the window with an open position.")
    equity_points = models.PositiveIntegerField(default=0, help_text="Equity points the ratios were computed from.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "agent_performance"


class AgentEquityBucket(models.Model):
    """One agent over one AGENT_PERFORMANCE_RETURN_SECONDS bucket of portfolio snapshots: the
    equity of the bucket's first snapshot (a point of the performance series) and the seconds
    its snapshots held, exposed and in all (each holds until the next snapshot).

    The performance task folds each snapshot in once, after the next one exists, so a run reads
    these narrow rows instead of every snapshot's row per agent (at 1,000 agents a 30-day window
    was 10,633 snapshots and 12 s of JSON every 5 minutes). Thinning old snapshots leaves these
    rows as they are.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+", db_index=False)
    bucket = models.DateTimeField(help_text="Start of the bucket (aligned to the Unix epoch).")
    first_at = models.DateTimeField(help_text="When the bucket's first snapshot was taken.")
    equity = DecimalAmount(help_text="The agent's equity in that first snapshot.")
    exposed = models.DurationField(help_text="Time held by this bucket's snapshots with an open position.")
    observed = models.DurationField(help_text="Time held by this bucket's snapshots.")

    class Meta:
        db_table = "agent_equity_buckets"
        constraints = [models.UniqueConstraint(fields=["agent", "bucket"], name="agent_equity_buckets_unique")]


class AgentEquityProgress(models.Model):
    """How far the snapshots have been folded into `agent_equity_buckets` (a single row): the
    last snapshot folded in, and the bucket width the rows were made with (a new width starts
    the rows afresh)."""

    bucket_seconds = models.PositiveIntegerField()
    folded_at = models.DateTimeField(null=True)
    folded_id = models.BigIntegerField(null=True)

    class Meta:
        db_table = "agent_equity_progress"


class Candle(models.Model):
    """One stored OHLCV bar of a venue (ccxt cache, CSV import, download). `ts` is the OPEN time, UTC.

    Written only by trading.services.market_data; the unique key makes every write an
    idempotent upsert, so two workers caching the same candle cannot duplicate it.
    """

    exchange = models.CharField(max_length=40)
    symbol = models.CharField(max_length=40)
    timeframe = models.CharField(max_length=8)
    ts = models.DateTimeField()
    open = DecimalAmount()
    high = DecimalAmount()
    low = DecimalAmount()
    close = DecimalAmount()
    volume = DecimalAmount(default=ZERO)

    class Meta:
        db_table = "candles"
        ordering = ["exchange", "symbol", "timeframe", "ts"]
        constraints = [
            # Also the index every read uses: (exchange, symbol, timeframe) then a range on ts.
            models.UniqueConstraint(fields=["exchange", "symbol", "timeframe", "ts"], name="candles_unique_bar"),
            models.CheckConstraint(
                condition=Q(low__lte=models.F("open")) & Q(low__lte=models.F("close"))
                & Q(high__gte=models.F("open")) & Q(high__gte=models.F("close")) & Q(low__gt=0) & Q(volume__gte=0),
                name="candles_ohlc_consistent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.exchange} {self.symbol} {self.timeframe} {self.ts.isoformat()} close {self.close}"


class BacktestRun(models.Model):
    """One stored `manage.py backtest --store` run: what was run, its figures and where its report is."""

    strategy = models.CharField(max_length=200, help_text="Strategy class (dotted path).")
    params = models.JSONField(default=dict, help_text="The strategy's parameters, as an agent stores them.")
    symbol = models.CharField(max_length=40)
    timeframe = models.CharField(max_length=8)
    source = models.CharField(max_length=60, help_text="synthetic:<seed> or stored:<exchange>.")
    start = models.DateTimeField()
    end = models.DateTimeField()
    candles = models.PositiveIntegerField(default=0)
    capital = DecimalAmount()
    fill_model = models.JSONField(default=dict, help_text="Fees, slippage and volume cap the fills used.")
    final_equity = DecimalAmount()
    trades = models.PositiveIntegerField(default=0, help_text="Closed trades: orders that realized PnL.")
    fills = models.PositiveIntegerField(default=0)
    win_rate = DecimalAmount(null=True, blank=True)
    sharpe_ratio = DecimalAmount(null=True, blank=True)
    sortino_ratio = DecimalAmount(null=True, blank=True)
    max_drawdown = DecimalAmount(null=True, blank=True)
    profit_factor = DecimalAmount(null=True, blank=True)
    total_pnl = DecimalAmount(default=ZERO)
    exposure_time = DecimalAmount(null=True, blank=True)
    report_path = models.CharField(max_length=500, blank=True,
                                   help_text="The HTML report (PNGs and trades.csv beside it).")
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "backtest_runs"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"backtest {self.pk}: {self.strategy.rsplit('.', 1)[-1]} {self.symbol} {self.timeframe}"


class BacktestTrade(models.Model):
    """One fill of a stored backtest (the same columns as its trades.csv)."""

    run = models.ForeignKey(BacktestRun, on_delete=models.CASCADE, related_name="trade_rows")
    order_number = models.PositiveIntegerField()
    bar = models.PositiveIntegerField()
    ts = models.DateTimeField(help_text="Close time of the bar that priced the fill.")
    side = models.CharField(max_length=4, choices=OrderSide.choices)
    quantity = DecimalAmount()
    price = DecimalAmount()
    fee = DecimalAmount()
    realized_pnl = DecimalAmount(default=ZERO)
    position = DecimalAmount()
    reason = models.TextField(blank=True)

    class Meta:
        db_table = "backtest_trades"
        ordering = ["run", "id"]
