from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.urls import reverse
from django.utils.html import format_html

from tinywindow.exceptions import ValidationError
from tinywindow.permissions import OPERATOR, actor_name, client_address, has_role
from trading.models import (
    Agent,
    AgentPerformance,
    AgentStatus,
    BacktestRun,
    BacktestTrade,
    Candle,
    Fill,
    Order,
    PortfolioSnapshot,
    Position,
)
from trading.services.agents import (
    UPDATABLE_FIELDS,
    agent_create,
    agent_delete,
    agent_set_status,
    agent_update,
    agent_validate,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the system: operators read them, nobody edits them by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AgentAdminForm(forms.ModelForm):
    """The agent form, validated by the same service rules as the API and CLI (agent_validate)."""

    class Meta:
        model = Agent
        fields = (*UPDATABLE_FIELDS, "status")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned  # field-level errors first; the service check needs every field
        fields = {name: cleaned[name] for name in UPDATABLE_FIELDS if name in cleaned}
        try:
            normalised = agent_validate(fields=fields, instance=self.instance if self.instance.pk else None)
        except ValidationError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        else:
            cleaned.update({name: normalised[name] for name in fields})
        return cleaned


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    """Agents are created, changed, paused and deleted only through trading.services.agents,
    so the admin keeps each agent's beat schedule in step and writes the audit log like every
    other surface."""

    form = AgentAdminForm
    list_display = ("name", "strategy", "symbols", "timeframe", "exchange", "mode", "status", "capital", "total_pnl",
                    "schedule_enabled", "last_tick_at")
    list_filter = ("status", "mode", "exchange")
    list_select_related = ("performance", "periodic_task")
    search_fields = ("name",)
    readonly_fields = ("schedule", "performance_summary", "last_tick_at", "last_decision", "created_at",
                       "updated_at")
    actions = ("pause_agents", "resume_agents", "stop_agents")

    def save_model(self, request, obj, form, change):
        actor, source = actor_name(request), client_address(request)
        data = form.cleaned_data
        if change:
            current = Agent.objects.get(pk=obj.pk)
            changes = {name: data[name] for name in form.changed_data if name in UPDATABLE_FIELDS}
            if changes:
                agent_update(agent=current, actor=actor, source=source, **changes)
        else:
            created = agent_create(**{name: data[name] for name in UPDATABLE_FIELDS}, actor=actor, source=source)
            obj.pk = created.pk
        if (not change and data["status"] != AgentStatus.ACTIVE) or (change and "status" in form.changed_data):
            agent_set_status(agent=obj, status=data["status"], actor=actor, source=source, reason="admin form")
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        try:
            agent_delete(agent=obj, actor=actor_name(request), source=client_address(request))
        except ValidationError as exc:
            self.message_user(request, exc.message, messages.ERROR)

    def delete_queryset(self, request, queryset):
        for agent in queryset:
            self.delete_model(request, agent)

    # --- read-only views of the agent's performance row and its beat schedule ---------------------
    @staticmethod
    def _performance(obj: Agent) -> AgentPerformance | None:
        try:
            return obj.performance
        except AgentPerformance.DoesNotExist:
            return None

    @admin.display(description="PnL (30 d)")
    def total_pnl(self, obj: Agent):
        perf = self._performance(obj)
        return perf.total_pnl.normalize() if perf else "—"

    @admin.display(description="Scheduled", boolean=True)
    def schedule_enabled(self, obj: Agent) -> bool | None:
        return obj.periodic_task.enabled if obj.periodic_task_id else None

    @admin.display(description="Performance")
    def performance_summary(self, obj: Agent) -> str:
        perf = self._performance(obj)
        if perf is None:
            return "not computed yet (the agent-performance task runs every 5 minutes)"
        win_rate = f"{perf.win_rate * 100:.1f}%" if perf.win_rate is not None else "—"
        def ratio(value):
            return f"{value:.2f}" if value is not None else "—"

        drawdown = f"{perf.max_drawdown * 100:.1f}%" if perf.max_drawdown is not None else "—"
        exposure = f"{perf.exposure_time * 100:.0f}%" if perf.exposure_time is not None else "—"
        return format_html(
            "{} closing trades · win rate {} · profit factor {} · total PnL {}<br>Sharpe {} · Sortino {} "
            "(annualised) · max drawdown {} · exposure {}<br>window {} → {}",
            perf.trades, win_rate, ratio(perf.profit_factor), perf.total_pnl.normalize(), ratio(perf.sharpe_ratio),
            ratio(perf.sortino_ratio), drawdown, exposure, f"{perf.window_start:%Y-%m-%d %H:%M}",
            f"{perf.window_end:%Y-%m-%d %H:%M} UTC")

    @admin.display(description="Beat schedule")
    def schedule(self, obj: Agent) -> str:
        task = obj.periodic_task
        if task is None:
            return "none (the agent is not scheduled)"
        url = reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])
        last = f"{task.last_run_at:%Y-%m-%d %H:%M:%S} UTC" if task.last_run_at else "never"
        return format_html("<a href=\"{}\">{}</a> · {} · {} · queue {} · last run {} · {} runs", url, task.name,
                           "enabled" if task.enabled else "disabled", task.interval or "no interval", task.queue,
                           last, task.total_run_count)

    # Pausing is an operator's move (DESIGN.md "Security"), not only an admin's.
    def has_pause_permission(self, request) -> bool:
        return has_role(request.user, OPERATOR)

    def _set_status(self, request, queryset, status: str) -> None:
        actor, source = actor_name(request), client_address(request)
        for agent in queryset:
            agent_set_status(agent=agent, status=status, actor=actor, source=source, reason="admin action")
        self.message_user(request, f"{queryset.count()} agent(s) now {status}", messages.SUCCESS)

    @admin.action(description="Pause selected agents (no new ticks)", permissions=["pause"])
    def pause_agents(self, request, queryset):
        self._set_status(request, queryset, AgentStatus.PAUSED)

    @admin.action(description="Resume selected agents", permissions=["pause"])
    def resume_agents(self, request, queryset):
        self._set_status(request, queryset, AgentStatus.ACTIVE)

    @admin.action(description="Stop selected agents", permissions=["pause"])
    def stop_agents(self, request, queryset):
        self._set_status(request, queryset, AgentStatus.STOPPED)


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("client_order_id", "agent", "symbol", "side", "quantity", "status", "average_fill_price", "fee",
                    "pnl", "origin", "created_at")
    list_filter = ("status", "side", "origin", "mode", "symbol")
    search_fields = ("client_order_id", "venue_order_id")
    date_hierarchy = "created_at"


@admin.register(Fill)
class FillAdmin(ReadOnlyAdmin):
    list_display = ("trade_id", "order", "symbol", "side", "quantity", "price", "fee", "realized_pnl", "executed_at")
    list_filter = ("symbol", "side", "exchange")


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = ("agent", "symbol", "quantity", "average_price", "realized_pnl", "fees_paid", "updated_at")


@admin.register(PortfolioSnapshot)
class PortfolioSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "equity", "cash", "gross_exposure", "net_exposure", "realized_pnl",
                    "unrealized_pnl", "drawdown", "open_orders")
    date_hierarchy = "created_at"

    def get_changelist(self, request, **kwargs) -> type[ChangeList]:
        return SnapshotTotalsChangeList


class SnapshotTotalsChangeList(ChangeList):
    """The snapshot list shows totals: it leaves each snapshot's per-agent and per-position lists
    in the database (a row per agent, 3 MB a snapshot at 12,000 agents); a snapshot's own page
    shows them."""

    def get_queryset(self, request, exclude_parameters=None):
        return super().get_queryset(request, exclude_parameters).defer("positions", "agents")


@admin.register(AgentPerformance)
class AgentPerformanceAdmin(ReadOnlyAdmin):
    list_display = ("agent", "trades", "win_rate", "sharpe_ratio", "sortino_ratio", "max_drawdown", "profit_factor",
                    "total_pnl", "exposure_time", "window_start", "window_end")


@admin.register(Candle)
class CandleAdmin(ReadOnlyAdmin):
    list_display = ("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
    list_filter = ("exchange", "symbol", "timeframe")
    date_hierarchy = "ts"


@admin.register(BacktestRun)
class BacktestRunAdmin(ReadOnlyAdmin):
    """Stored backtests (`manage.py backtest --store`): figures, parameters, the HTML report, the fills."""

    list_display = ("id", "created_at", "strategy_name", "symbol", "timeframe", "candles", "trades", "total_pnl",
                    "sharpe_ratio", "max_drawdown", "final_equity")
    list_filter = ("symbol", "timeframe", "strategy")
    readonly_fields = ("report_link", "trades_link")

    @admin.display(description="strategy", ordering="strategy")
    def strategy_name(self, run):
        return run.strategy.rsplit(".", 1)[-1]

    @admin.display(description="Report")
    def report_link(self, run):
        if not run.report_path:
            return "—"
        url = reverse("admin:trading_backtestrun_report", args=[run.pk])
        return format_html('<a href="{}">open the HTML report</a> ({})', url, run.report_path)

    @admin.display(description="Fills")
    def trades_link(self, run):
        url = reverse("admin:trading_backtesttrade_changelist") + f"?run__id__exact={run.pk}"
        return format_html('<a href="{}">{} fill(s)</a>', url, run.fills)

    def get_urls(self):
        from django.urls import path

        return [path("<int:pk>/report/", self.admin_site.admin_view(self.report_view),
                     name="trading_backtestrun_report"), *super().get_urls()]

    def report_view(self, request, pk):
        """The run's report.html as written by the command (it embeds its images: one file)."""
        from pathlib import Path

        from django.http import FileResponse, Http404

        run = BacktestRun.objects.filter(pk=pk).first()
        if run is None or not self.has_view_permission(request, run):
            raise Http404("no such backtest")
        path = Path(run.report_path)
        # Only the file the command wrote: a report.html, never any other path stored in the row.
        if path.name != "report.html" or not path.is_file():
            raise Http404("the report file is no longer there")
        return FileResponse(path.open("rb"), content_type="text/html; charset=utf-8")


@admin.register(BacktestTrade)
class BacktestTradeAdmin(ReadOnlyAdmin):
    list_display = ("run", "order_number", "bar", "ts", "side", "quantity", "price", "fee", "realized_pnl",
                    "position")
    list_filter = ("run", "side")
    list_select_related = ("run",)
