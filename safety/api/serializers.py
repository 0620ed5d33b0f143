from __future__ import annotations

from rest_framework import serializers

from safety.models import (
    AuditEvent,
    BreakerStatus,
    CircuitBreakerEvent,
    KillSwitchEvent,
    KillSwitchMode,
    RiskLimit,
)
from safety.services.kill_switch import MAX_REASON_LENGTH


class KillSwitchActivateSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=KillSwitchMode.choices)
    reason = serializers.CharField(max_length=MAX_REASON_LENGTH, allow_blank=False, trim_whitespace=True)


class KillSwitchDeactivateSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=MAX_REASON_LENGTH, required=False, allow_blank=True, default="")


class KillSwitchStateSerializer(serializers.Serializer):
    active = serializers.BooleanField()
    mode = serializers.CharField(allow_blank=True)
    reason = serializers.CharField(allow_blank=True)
    actor = serializers.CharField(allow_blank=True)
    changed_at = serializers.DateTimeField(allow_null=True)


class KillSwitchEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = KillSwitchEvent
        fields = ["id", "action", "mode", "reason", "actor", "source", "details", "created_at"]


class CircuitBreakerStateSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField(source="config.kind")
    scope = serializers.CharField(source="config.scope")
    target = serializers.CharField()
    state = serializers.CharField()
    threshold = serializers.DecimalField(source="config.threshold", max_digits=28, decimal_places=10)
    last_value = serializers.DecimalField(max_digits=28, decimal_places=10, allow_null=True)
    recovery_seconds = serializers.IntegerField(source="config.recovery_seconds")
    changed_at = serializers.DateTimeField(allow_null=True)
    last_checked_at = serializers.DateTimeField(allow_null=True)


class BreakerFilterSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=BreakerStatus.choices, required=False)
    breaker = serializers.CharField(max_length=64, required=False,
                                    help_text="A breaker's name, e.g. `consecutive_losses` (every target of it).")


class BreakerResetSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=MAX_REASON_LENGTH, allow_blank=False, trim_whitespace=True)
    name = serializers.CharField(max_length=200, required=False, allow_blank=False,
                                 help_text="One breaker (e.g. `api_error_rate:binance`); all when omitted.")


class CircuitBreakerEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = CircuitBreakerEvent
        fields = ["id", "breaker", "scope", "action", "reason", "details", "threshold_value", "actual_value",
                  "actor", "created_at"]


class RiskLimitSerializer(serializers.ModelSerializer):
    class Meta:
        model = RiskLimit
        fields = ["id", "agent", "max_order_notional", "max_position_notional", "max_gross_exposure",
                  "max_open_orders", "max_orders_per_minute", "price_band", "updated_at"]
        read_only_fields = ["id", "updated_at"]
        validators = []  # one row per agent is enforced by the view's update-or-create

    def validate(self, attrs):
        for field in ("max_order_notional", "max_position_notional", "max_gross_exposure", "price_band"):
            value = attrs.get(field)
            if value is not None and value <= 0:
                raise serializers.ValidationError({field: "must be positive (leave empty for no limit)"})
        for field in ("max_open_orders", "max_orders_per_minute"):
            if attrs.get(field) == 0:  # halting everything is the kill switch's job, not a typo's
                raise serializers.ValidationError({field: "must be at least 1 (leave empty for no limit)"})
        if attrs.get("price_band") is not None and attrs["price_band"] > 1:
            raise serializers.ValidationError({"price_band": "is a fraction: 0.05 means 5%"})
        return attrs


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = ["id", "actor", "action", "target", "details", "source", "created_at"]
