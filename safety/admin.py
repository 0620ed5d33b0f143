from django.contrib import admin, messages
from django.template.response import TemplateResponse

from safety.models import (
    AuditEvent,
    CircuitBreakerConfig,
    CircuitBreakerEvent,
    CircuitBreakerState,
    KillSwitchEvent,
    KillSwitchState,
    RiskLimit,
)
from safety.services.audit import audit_record
from safety.services.breakers import breaker_reset
from tinywindow.exceptions import ValidationError
from tinywindow.permissions import actor_name, client_address
from trading.admin import ReadOnlyAdmin


class AuditedAdmin(admin.ModelAdmin):
    """Edits of safety settings are operator actions: every save is in the audit log."""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        audit_record(actor=actor_name(request), action=f"{obj._meta.model_name}.{'change' if change else 'add'}",
                     target=str(obj), details={k: str(form.cleaned_data.get(k)) for k in form.changed_data},
                     source=client_address(request))

    def delete_model(self, request, obj):
        audit_record(actor=actor_name(request), action=f"{obj._meta.model_name}.delete", target=str(obj),
                     source=client_address(request))
        super().delete_model(request, obj)


@admin.register(KillSwitchState)
class KillSwitchStateAdmin(ReadOnlyAdmin):
    list_display = ("active", "mode", "reason", "actor", "changed_at")


@admin.register(KillSwitchEvent)
class KillSwitchEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "action", "mode", "reason", "actor", "source")
    list_filter = ("action", "mode")


@admin.register(CircuitBreakerConfig)
class CircuitBreakerConfigAdmin(AuditedAdmin):
    list_display = ("name", "kind", "scope", "threshold", "window_seconds", "recovery_seconds", "probe_seconds",
                    "probe_max_orders", "enabled")
    list_editable = ("threshold", "recovery_seconds", "enabled")
    list_filter = ("kind", "scope", "enabled")


@admin.register(CircuitBreakerState)
class CircuitBreakerStateAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "state", "last_value", "changed_at", "last_checked_at", "probe_orders_used")
    list_filter = ("state", "config__kind")
    actions = ["reset_breakers"]

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Reset the selected breakers (asks for a reason)")
    def reset_breakers(self, request, queryset):
        reason = request.POST.get("reason", "")
        error = ""
        if request.POST.get("confirm") == "yes":
            try:
                closed = []
                for state in queryset.select_related("config"):
                    closed += breaker_reset(reason=reason, name=state.name, actor=actor_name(request),
                                            source=client_address(request))
                self.message_user(request, f"Reset: {', '.join(closed) or 'nothing was open'}", messages.SUCCESS)
                return None
            except ValidationError as exc:
                error = exc.message
        return TemplateResponse(request, "admin/safety/breaker_reset.html",
                                {**self.admin_site.each_context(request), "states": queryset, "reason": reason,
                                 "error": error, "title": "Reset circuit breakers"})

    def get_actions(self, request):
        actions = super().get_actions(request)
        # ReadOnlyAdmin removes delete; resetting is allowed to operators (checked by the service's audit).
        return actions


@admin.register(CircuitBreakerEvent)
class CircuitBreakerEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "breaker", "scope", "action", "reason", "threshold_value", "actual_value", "actor")
    list_filter = ("breaker", "action")


@admin.register(RiskLimit)
class RiskLimitAdmin(AuditedAdmin):
    list_display = ("__str__", "max_order_notional", "max_position_notional", "max_gross_exposure",
                    "max_open_orders", "max_orders_per_minute", "price_band")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "target", "source")
    list_filter = ("action",)
    search_fields = ("actor", "target")
