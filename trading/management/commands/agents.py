"""`python manage.py agents list|pause NAME|resume NAME|stop NAME`: agents from a shell.

Status changes go through trading.services.agents.agent_set_status like the API and the admin
(the beat schedule follows, audited); the actor is `cli:<os user>`, the source `cli`.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from tinywindow.cli import CLI_SOURCE, cli_actor, cli_errors, table, usage_error
from trading.models import Agent, AgentPerformance, AgentStatus
from trading.selectors import agents_list
from trading.services.agents import agent_set_status

TARGETS = {"pause": AgentStatus.PAUSED, "resume": AgentStatus.ACTIVE, "stop": AgentStatus.STOPPED}


def _pnl(agent: Agent) -> str:
    try:
        return f"{agent.performance.total_pnl.normalize():f}"
    except AgentPerformance.DoesNotExist:
        return "-"


def _ago(agent: Agent) -> str:
    if agent.last_tick_at is None:
        return "never"
    seconds = int((timezone.now() - agent.last_tick_at).total_seconds())
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


class Command(BaseCommand):
    help = ("List agents, or pause, resume or stop one by name (its beat schedule follows; positions and open "
            "orders stay). Exit codes: 0 done, 2 usage error or unknown agent (nothing changed), 1 database "
            "failure.")

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,pause,resume,stop}")
        listing = actions.add_parser("list", help="Every agent with its status, strategy, symbols and PnL.")
        listing.add_argument("--status", choices=AgentStatus.values, help="Only agents in this status.")
        listing.add_argument("--json", action="store_true", help="Print the agents as JSON.")
        for verb, text in (("pause", "Stop ticking (no new orders) until resumed."),
                           ("resume", "Tick again."), ("stop", "Take out of service (can be resumed).")):
            sub = actions.add_parser(verb, help=text)
            sub.add_argument("name", help="The agent's name (see `agents list`).")
            sub.add_argument("--reason", default="", help="Why (kept in the audit log).")

    def handle(self, *args, **options) -> None:
        with cli_errors():
            if options["action"] == "list":
                self._list(status=options["status"], as_json=options["json"])
                return
            agent = Agent.objects.filter(name=options["name"]).first()
            if agent is None:
                known = ", ".join(Agent.objects.order_by("name").values_list("name", flat=True)) or "none"
                raise usage_error(f"no agent named {options['name']!r} (agents: {known})")
            target = TARGETS[options["action"]]
            if agent.status == target:
                self.stdout.write(f"Agent {agent.name} is already {target}; nothing changed.")
                return
            agent = agent_set_status(agent=agent, status=target, actor=cli_actor(), source=CLI_SOURCE,
                                     reason=options["reason"])
            self.stdout.write(self.style.SUCCESS(f"Agent {agent.name} is now {agent.status}."))

    def _list(self, *, status: str | None, as_json: bool) -> None:
        agents = list(agents_list(status=status))
        if as_json:
            self.stdout.write(json.dumps([
                {"id": a.pk, "name": a.name, "status": a.status, "strategy": a.strategy, "symbols": a.symbols,
                 "exchange": a.exchange, "mode": a.mode, "capital": str(a.capital), "total_pnl": _pnl(a),
                 "last_tick_at": a.last_tick_at.isoformat() if a.last_tick_at else None} for a in agents]))
            return
        if not agents:
            self.stdout.write("No agents.")
            return
        rows = [(a.pk, a.name, a.status, a.strategy.rsplit(".", 1)[-1], ",".join(a.symbols), a.exchange, a.mode,
                 f"{a.capital.normalize():f}", _pnl(a), _ago(a)) for a in agents]
        self.stdout.write(table(rows, ["id", "name", "status", "strategy", "symbols", "exchange", "mode", "capital",
                                       "pnl (30d)", "last tick"]))
