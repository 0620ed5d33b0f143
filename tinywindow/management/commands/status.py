"""`python manage.py status`: the whole desk on one screen.

Health checks (those of the web's /health), mode, kill switch, circuit breakers, agents and the
PnL of the latest portfolio snapshot. Exit 0 when every health check passes, 1 when something
is down or the state cannot be read (so scripts and cron can alert on it), 2 on a usage error.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tinywindow.cli import EXIT_FAILURE
from tinywindow.exceptions import SafetyStateUnknown
from tinywindow.health import WEB_CHECKS, run_checks
from tinywindow.status import system_status, trading_mode


def _money(value) -> str:
    return f"{value:,.2f}"


class Command(BaseCommand):
    help = ("One screen: health checks (database, Redis, broker, engine, kill switch, breakers), PAPER/LIVE, "
            "the kill switch, open circuit breakers, agents, PnL from the latest portfolio snapshot, open orders. "
            "Exit code 0 when every health check passes, 1 when the system is degraded or unreadable.")

    def add_arguments(self, parser: CommandParser) -> None:
        pass  # no options: `manage.py status --help` still explains the exit codes

    def handle(self, *args, **options) -> None:
        now = timezone.now()
        code, health = run_checks(WEB_CHECKS)
        out = self.stdout.write
        out(f"TinyWindow status at {now:%Y-%m-%d %H:%M:%S} UTC")
        out(f"  Mode          {trading_mode()}")
        checks = []
        for name, result in health["checks"].items():
            checks.append(f"{name} ok" if result["ok"] else f"{name} FAILED ({result.get('error', 'not ok')})")
        out(f"  Health        {health['status'].upper()}: " + "; ".join(checks))
        try:
            current = system_status()
        except SafetyStateUnknown as exc:
            out(self.style.ERROR(f"  State         unknown: {exc}"))
            raise CommandError("the system state cannot be read", returncode=EXIT_FAILURE) from None
        ks = current.kill_switch
        if ks.active:
            out(self.style.ERROR(f"  Kill switch   ACTIVE ({ks.mode}) by {ks.actor} at "
                                 f"{ks.changed_at:%Y-%m-%d %H:%M:%S} UTC: {ks.reason}"))
        else:
            out("  Kill switch   inactive")
        opened = ", ".join(f"{s.name} {s.state}" for s in current.open_breakers) or "none open"
        line = f"  Breakers      {current.breaker_status} ({opened})"
        out(self.style.WARNING(line) if current.open_breakers else line)
        counts = current.agents
        out(f"  Agents        {counts['active']} active, {counts['paused']} paused, {counts['stopped']} stopped")
        out(f"  Open orders   {current.open_orders}")
        snap = current.latest_snapshot
        if snap is None:
            out("  PnL           no portfolio snapshot yet (taken every RISK_SNAPSHOT_SECONDS)")
        else:
            age = int((now - snap.created_at).total_seconds())
            out(f"  PnL           equity {_money(snap.equity)}  realized {_money(snap.realized_pnl)}  unrealized "
                f"{_money(snap.unrealized_pnl)}  drawdown {snap.drawdown * 100:.2f}%  ({age}s ago)")
        if code != 200:
            raise CommandError("degraded: a health check failed (see Health above)", returncode=EXIT_FAILURE)
