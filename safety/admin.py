from django.contrib import admin

from safety.models import AuditEvent, CircuitBreakerEvent, KillSwitchEvent, KillSwitchState
from trading.admin import ReadOnlyAdmin


@admin.register(KillSwitchState)
class KillSwitchStateAdmin(ReadOnlyAdmin):
    list_display = ("active", "mode", "reason", "actor", "changed_at")


@admin.register(KillSwitchEvent)
class KillSwitchEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "action", "mode", "reason", "actor", "source")
    list_filter = ("action", "mode")


@admin.register(CircuitBreakerEvent)
class CircuitBreakerEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "breaker", "scope", "action", "reason", "threshold_value", "actual_value")
    list_filter = ("breaker", "action")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "target", "source")
    list_filter = ("action",)
    search_fields = ("actor", "target")
