"""`python manage.py breakers status|reset`: circuit breakers from a shell.

Reset goes through safety.services.breakers.breaker_reset like the API, the admin action and
`tinywindow.safety.circuit_breaker.reset()`: a reason is required, every reset is an event and
an audit entry; the actor is `cli:<os user>`, the source `cli`.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from safety.services.breakers import aggregate_status, breaker_reset, breaker_states
from tinywindow.cli import CLI_SOURCE, cli_actor, cli_errors, table


class Command(BaseCommand):
    help = ("Show circuit breakers or reset them (all, or one with --name). A reset needs --reason. Exit codes: "
            "0 done, 2 usage or validation error (nothing changed), 1 database or Redis failure.")

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{status,reset}")
        status = actions.add_parser("status", help="Every breaker with its state, value and threshold.")
        status.add_argument("--json", action="store_true", help="Print the breakers as JSON.")
        status.add_argument("--open", action="store_true",
                            help="Only the breakers not closed (open or half-open): the per-agent breaker has a "
                            "closed row for every agent.")
        reset = actions.add_parser("reset", help="Close breakers by hand (trading in their scope resumes).")
        reset.add_argument("--name", help="One breaker, e.g. `drawdown` or `stale_data:BTC/USDT` (default: all).")
        reset.add_argument("--reason", required=True, help="Why (required; in the event and audit log).")

    def handle(self, *args, **options) -> None:
        with cli_errors():
            if options["action"] == "status":
                states = breaker_states(not_closed=options["open"])
                overall = aggregate_status(s.state for s in states)
                if options["json"]:
                    self.stdout.write(json.dumps({"status": overall, "breakers": [
                        {"name": s.name, "state": s.state, "value": str(s.last_value) if s.last_value is not None
                         else None, "threshold": str(s.config.threshold),
                         "changed_at": s.changed_at.isoformat() if s.changed_at else None} for s in states]}))
                    return
                self.stdout.write(f"Circuit breakers: {overall}")
                rows = [(s.name, s.state, _num(s.last_value), _num(s.config.threshold),
                         f"{s.changed_at:%Y-%m-%d %H:%M:%S}" if s.changed_at else "") for s in states]
                if rows:
                    self.stdout.write(table(rows, ["breaker", "state", "value", "threshold", "changed (UTC)"]))
                else:
                    self.stdout.write("(none open)" if options["open"] else "(no breaker evaluated yet)")
                return
            reset = breaker_reset(reason=options["reason"], name=options["name"], actor=cli_actor(), source=CLI_SOURCE)
            if reset:
                self.stdout.write(self.style.SUCCESS(f"Reset: {', '.join(reset)}"))
            else:
                self.stdout.write(f"Nothing was open{' named ' + options['name'] if options['name'] else ''}; "
                                  "the reset is recorded.")


def _num(value) -> str:
    return "" if value is None else f"{value.normalize():f}"
