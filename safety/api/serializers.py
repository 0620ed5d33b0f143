from __future__ import annotations

from rest_framework import serializers

from safety.models import KillSwitchEvent, KillSwitchMode
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
