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
