from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from safety.models import (
    AuditEvent,
    CircuitBreakerConfig,
    CircuitBreakerEvent,
    CircuitBreakerState,
    KillSwitchEvent,
    KillSwitchMode,
    KillSwitchState,
    RiskLimit,
)
from safety.services.audit import audit_record
from safety.services.breakers import breaker_reset
from safety.services.kill_switch import (
    MAX_REASON_LENGTH,
    kill_switch_disengage,
    kill_switch_engage,
    kill_switch_read_db,
)
from tinywindow.exceptions import ValidationError
from tinywindow.permissions import ADMIN, OPERATOR, actor_name, client_address, has_role
from tinywindow.status import trading_mode
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


MODE_EFFECTS = {
    KillSwitchMode.HALT_ONLY: "no new orders anywhere; every open order is cancelled.",
    KillSwitchMode.CLOSE_POSITIONS: "as HALT_ONLY, then every position is flattened with reduce-only orders.",
}


class KillSwitchActivateForm(forms.Form):
    mode = forms.ChoiceField(choices=KillSwitchMode.choices)
    reason = forms.CharField(max_length=MAX_REASON_LENGTH, widget=forms.Textarea(attrs={"rows": 3, "cols": 80}))


class KillSwitchDeactivateForm(forms.Form):
    reason = forms.CharField(max_length=MAX_REASON_LENGTH, required=False,
                             widget=forms.Textarea(attrs={"rows": 2, "cols": 80}))


@admin.register(KillSwitchState)
class KillSwitchStateAdmin(ReadOnlyAdmin):
    """The kill-switch page: the state, activation (operators) and deactivation (admins), each
    behind a confirmation step, through safety.services.kill_switch like every other surface.
    The single state row has no list worth showing, so the changelist is this page."""

    list_display = ("active", "mode", "reason", "actor", "changed_at")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        can_activate, can_deactivate = has_role(request.user, OPERATOR), has_role(request.user, ADMIN)
        activate_form = KillSwitchActivateForm(prefix="activate", initial={"mode": KillSwitchMode.HALT_ONLY})
        deactivate_form = KillSwitchDeactivateForm(prefix="deactivate")
        confirm = ""
        if request.method == "POST":
            action = request.POST.get("action")
            confirmed = request.POST.get("confirm") == "yes"
            actor, source = actor_name(request), client_address(request)
            if action == "activate":
                if not can_activate:
                    raise PermissionDenied("activating the kill switch needs the operator role")
                activate_form = KillSwitchActivateForm(request.POST, prefix="activate")
                if activate_form.is_valid() and not confirmed:
                    confirm = "activate"
                elif activate_form.is_valid():
                    data = activate_form.cleaned_data
                    try:
                        kill_switch_engage(mode=data["mode"], reason=data["reason"], actor=actor, source=source)
                    except ValidationError as exc:
                        activate_form.add_error(exc.field if exc.field in activate_form.fields else None, exc.message)
                    else:
                        self.message_user(request, f"Kill switch ACTIVE ({data['mode']}).", messages.WARNING)
                        return redirect(request.path)
            elif action == "deactivate":
                if not can_deactivate:
                    raise PermissionDenied("deactivating the kill switch needs the admin role")
                deactivate_form = KillSwitchDeactivateForm(request.POST, prefix="deactivate")
                if deactivate_form.is_valid() and not confirmed:
                    confirm = "deactivate"
                elif deactivate_form.is_valid():
                    kill_switch_disengage(actor=actor, source=source, reason=deactivate_form.cleaned_data["reason"])
                    self.message_user(request, "Kill switch deactivated. Circuit breakers were not reset.",
                                      messages.SUCCESS)
                    return redirect(request.path)
        mode = activate_form["mode"].value() or KillSwitchMode.HALT_ONLY
        context = {
            **self.admin_site.each_context(request),
            "title": "Kill switch",
            "opts": self.model._meta,
            "state": kill_switch_read_db(),
            "trading_mode": trading_mode(),
            "events": KillSwitchEvent.objects.order_by("-created_at", "-id")[:10],
            "can_activate": can_activate,
            "can_deactivate": can_deactivate,
            "activate_form": activate_form,
            "deactivate_form": deactivate_form,
            "activate_mode": mode,
            "mode_choices": [(value, MODE_EFFECTS[value]) for value in KillSwitchMode.values],
            "confirm": confirm,
            "confirm_effect": MODE_EFFECTS.get(mode, "") if confirm == "activate" else "",
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/safety/kill_switch.html", context)


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
    list_select_related = ("config",)  # each row's name is its config's: one query a page, not one a row
    list_filter = ("state", "config__kind")
    actions = ["reset_breakers"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_reset_permission(self, request) -> bool:
        # Resetting breakers is an operator's move (DESIGN.md "Security"), never a viewer's.
        return has_role(request.user, OPERATOR)

    @admin.action(description="Reset the selected breakers (asks for a reason)", permissions=["reset"])
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
