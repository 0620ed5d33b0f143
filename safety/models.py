"""Safety state and its history: kill switch, circuit breaker events, audit log.

State is authoritative here (PostgreSQL) and mirrored to Redis for fast reads; every change
appends an event row (who, why, when, from where).
"""

from __future__ import annotations

from django.db import models

from tinywindow.fields import DecimalAmount


class KillSwitchMode(models.TextChoices):
    HALT_ONLY = "HALT_ONLY"
    CLOSE_POSITIONS = "CLOSE_POSITIONS"


class KillSwitchState(models.Model):
    """The single kill-switch row (id=1). Read under lock by every order right before it is sent."""

    SINGLETON_ID = 1

    active = models.BooleanField(default=False)
    mode = models.CharField(max_length=20, choices=KillSwitchMode.choices, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "kill_switch_state"

    def __str__(self) -> str:
        return f"ACTIVE ({self.mode})" if self.active else "inactive"


class KillSwitchAction(models.TextChoices):
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"


class KillSwitchEvent(models.Model):
    action = models.CharField(max_length=12, choices=KillSwitchAction.choices)
    mode = models.CharField(max_length=20, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=150)
    source = models.CharField(max_length=64, blank=True, default="", help_text="Client address or 'cli'/'admin'.")
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "kill_switch_events"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.mode} by {self.actor}"


class CircuitBreakerEvent(models.Model):
    """A breaker changed state: trip, half-open probe, close, or an operator reset."""

    breaker = models.CharField(max_length=100)
    scope = models.CharField(max_length=100, default="global")
    action = models.CharField(max_length=16)  # trip | half_open | close | reset
    reason = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    threshold_value = DecimalAmount(null=True, blank=True)
    actual_value = DecimalAmount(null=True, blank=True)
    actor = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "circuit_breaker_events"
        ordering = ["-created_at"]


class AuditEvent(models.Model):
    """Every operator action, whatever surface it came from."""

    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=200, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "audit_events"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"


class BreakerStatus(models.TextChoices):
    CLOSED = "CLOSED"
    HALF_OPEN = "HALF_OPEN"
    OPEN = "OPEN"


# The states that stop or limit trading. Reads for them (every order's safety read under the
# trading gate, /api/status) go through a partial index of these rows only: at scale nearly every
# state is CLOSED (one per agent for the consecutive-losses breaker).
BREAKER_NOT_CLOSED = (BreakerStatus.OPEN, BreakerStatus.HALF_OPEN)


class BreakerKind(models.TextChoices):
    DAILY_LOSS = "daily_loss", "Daily loss (quote currency)"
    DRAWDOWN = "drawdown", "Drawdown from peak equity (fraction)"
    CONSECUTIVE_LOSSES = "consecutive_losses", "Consecutive losing trades"
    API_ERROR_RATE = "api_error_rate", "Exchange API error rate (fraction)"
    REJECT_RATE = "reject_rate", "Order reject rate (fraction)"
    PRICE_SHOCK = "price_shock", "Price move within the window (fraction)"
    STALE_DATA = "stale_data", "Market data age (seconds)"


class BreakerScope(models.TextChoices):
    GLOBAL = "global"
    EXCHANGE = "exchange"
    AGENT = "agent"
    SYMBOL = "symbol"


class CircuitBreakerConfig(models.Model):
    """One breaker definition. Scoped breakers (per exchange, agent or symbol) keep one state
    row per target, created the first time that target is evaluated."""

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=24, choices=BreakerKind.choices)
    scope = models.CharField(max_length=10, choices=BreakerScope.choices, default=BreakerScope.GLOBAL)
    threshold = DecimalAmount(help_text="Trips when the measured value reaches this (>=).")
    window_seconds = models.PositiveIntegerField(default=300, help_text="Look-back for rates and price moves.")
    min_samples = models.PositiveIntegerField(default=10, help_text="Rates need at least this many events.")
    recovery_seconds = models.PositiveIntegerField(default=60, help_text="OPEN → HALF_OPEN after this long.")
    probe_seconds = models.PositiveIntegerField(default=30, help_text="HALF_OPEN → CLOSED after this long clean.")
    probe_max_orders = models.PositiveIntegerField(default=1, help_text="Orders allowed while HALF_OPEN.")
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "circuit_breaker_configs"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind} ≥ {self.threshold}, {self.scope})"


class CircuitBreakerState(models.Model):
    config = models.ForeignKey(CircuitBreakerConfig, on_delete=models.CASCADE, related_name="states")
    target = models.CharField(max_length=100, blank=True, default="", help_text="Exchange, agent id or symbol.")
    state = models.CharField(max_length=10, choices=BreakerStatus.choices, default=BreakerStatus.CLOSED)
    changed_at = models.DateTimeField(null=True, blank=True)
    counting_since = models.DateTimeField(null=True, blank=True, help_text="Counts (losses) start here.")
    probe_orders_used = models.PositiveIntegerField(default=0)
    last_value = DecimalAmount(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "circuit_breaker_states"
        constraints = [models.UniqueConstraint(fields=["config", "target"], name="breaker_state_unique_target")]
        indexes = [models.Index(fields=["state"], name="breaker_states_not_closed_idx",
                                condition=models.Q(state__in=BREAKER_NOT_CLOSED))]

    @property
    def name(self) -> str:
        return self.config.name if not self.target else f"{self.config.name}:{self.target}"

    def __str__(self) -> str:
        return f"{self.name} {self.state}"


class RiskLimit(models.Model):
    """Pre-trade limits. The row without an agent is global; an agent's row adds its own.
    An empty field means no limit of that kind."""

    agent = models.OneToOneField("trading.Agent", null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="risk_limit")
    max_order_notional = DecimalAmount(null=True, blank=True)
    max_position_notional = DecimalAmount(null=True, blank=True, help_text="Per symbol.")
    max_gross_exposure = DecimalAmount(null=True, blank=True)
    max_open_orders = models.PositiveIntegerField(null=True, blank=True)
    max_orders_per_minute = models.PositiveIntegerField(null=True, blank=True)
    price_band = DecimalAmount(null=True, blank=True, help_text="Max distance of a limit price from the last "
                                                                "price, as a fraction (0.05 = 5%).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "risk_limits"
        constraints = [
            models.UniqueConstraint(fields=["agent"], name="risk_limit_one_global",
                                    condition=models.Q(agent__isnull=True), nulls_distinct=False),
        ]

    def __str__(self) -> str:
        return f"risk limits ({self.agent or 'global'})"
