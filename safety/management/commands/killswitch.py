"""`python manage.py killswitch status|activate|deactivate`: the kill switch from a shell.

Goes through safety.services.kill_switch like the API and the admin (events, audit, Redis
mirror); the actor is `cli:<os user>`, the source `cli`.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from safety.models import KillSwitchEvent, KillSwitchMode
from safety.services.kill_switch import KillSwitchView, kill_switch_disengage, kill_switch_engage, kill_switch_read_db
from tinywindow.cli import CLI_SOURCE, cli_actor, cli_errors


def describe(view: KillSwitchView) -> str:
    if not view.active:
        last = f" (last change by {view.actor} at {view.changed_at:%Y-%m-%d %H:%M:%S} UTC)" if view.changed_at else ""
        return f"Kill switch: inactive{last}"
    return (f"Kill switch: ACTIVE ({view.mode}) since {view.changed_at:%Y-%m-%d %H:%M:%S} UTC by {view.actor}\n"
            f"Reason: {view.reason}")


class Command(BaseCommand):
    help = ("Show, activate or deactivate the kill switch. `activate` stops all trading at once: HALT_ONLY cancels "
            "every open order, CLOSE_POSITIONS also flattens every position. Exit codes: 0 done, 2 usage or "
            "validation error (nothing changed), 1 database or Redis failure.")

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{status,activate,deactivate}")
        status = actions.add_parser("status", help="Show the state (from PostgreSQL) and the last events.")
        status.add_argument("--json", action="store_true", help="Print the state as JSON.")
        activate = actions.add_parser("activate", help="Stop all trading now.")
        activate.add_argument("--mode", required=True, choices=KillSwitchMode.values,
                              help="HALT_ONLY: no new orders, open orders cancelled. CLOSE_POSITIONS: also "
                              "flatten every position with reduce-only orders.")
        activate.add_argument("--reason", required=True, help="Why (required; in the event and audit log).")
        deactivate = actions.add_parser("deactivate", help="Let trading resume (circuit breakers are not reset).")
        deactivate.add_argument("--reason", default="", help="Why (optional).")

    def handle(self, *args, **options) -> None:
        with cli_errors():
            action = options["action"]
            if action == "status":
                view = kill_switch_read_db()
                if options["json"]:
                    body = {"active": view.active, "mode": view.mode, "reason": view.reason, "actor": view.actor,
                            "changed_at": view.changed_at.isoformat() if view.changed_at else None}
                    self.stdout.write(json.dumps(body))
                    return
                self.stdout.write(describe(view))
                events = KillSwitchEvent.objects.order_by("-created_at", "-id")[:5]
                if events:
                    self.stdout.write("Last events:")
                    for event in events:
                        self.stdout.write(f"  {event.created_at:%Y-%m-%d %H:%M:%S}  {event.action:<10} "
                                          f"{event.mode or '-':<15} {event.actor}: {event.reason}")
            elif action == "activate":
                view = kill_switch_engage(mode=options["mode"], reason=options["reason"], actor=cli_actor(),
                                          source=CLI_SOURCE)
                self.stdout.write(self.style.WARNING(describe(view)))
            else:
                view = kill_switch_disengage(actor=cli_actor(), source=CLI_SOURCE, reason=options["reason"])
                self.stdout.write(self.style.SUCCESS(describe(view)) + "\nCircuit breakers were not reset.")
