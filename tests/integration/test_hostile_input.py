"""Hostile input on every API endpoint that takes input and every command that does (issue 9,
"Security" 1): negative, zero, NaN, infinite, huge and non-numeric quantities and prices,
unknown symbols and agents, oversized bodies, SQL and script strings, wrong JSON types.
Each is a 400 naming the field (a CLI error with a non-zero exit, no traceback), and nothing is
written: the test compares a fingerprint of every table a write could touch.

Free text (a reason) may hold any characters: there an SQL or script string is stored as the
text it is (parameterised queries, escaped on output) — asserted too.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from decimal import Decimal

import pytest
from django.core.management import CommandError, ManagementUtility
from django.test import Client

from safety.models import (
    KillSwitchEvent,
)
from tests.desk import REMOTE, db_fingerprint, make_role_users
from tests.factories import make_agent
from trading.models import Order
from trading.services.orders import order_create

pytestmark = pytest.mark.django_db

SQL = "x'); DROP TABLE orders; --"
SCRIPT = "<script>alert(1)</script>"
# Numbers as a client may send them: every one is wrong where a positive amount is asked for.
BAD_POSITIVE_NUMBERS = [-1, "-0.5", 0, "0", "NaN", "nan", "Infinity", "-Infinity", "1e400", "9" * 60,
                        "0.00000000000000000000001", "abc", "", None, True, [], {}, "1; DROP TABLE orders", SCRIPT]
BAD_COUNTS = [-1, 0, "NaN", "Infinity", 1.5, "1e400", 2**63, "abc", "", None, True, [], {}, SQL]
BAD_SYMBOLS = [["NOPE/USDT"], ["BTC-USDT"], [SQL], [SCRIPT], ["BTC/USDT\u0000"], [], "BTC/USDT", [1], [None]]
BAD_NAMES = [SQL, SCRIPT, "", " ", "a" * 101, None, ["x"], "bad\u0000name", "../../etc/passwd"]


fingerprint = db_fingerprint


@pytest.fixture
def desk():
    """An admin's session (from a remote address: no loopback exception) and one agent with an
    order (real services; the synthetic feed prices it)."""
    users = make_role_users()
    agent = make_agent(name="target")
    order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=Decimal("0.01"), enqueue=False)
    admin = Client(REMOTE_ADDR=REMOTE)
    admin.force_login(users["admin"])
    return {"client": admin, "agent": agent}


def _send(client: Client, method: str, path: str, body) -> object:
    return getattr(client, method)(path, json.dumps(body), content_type="application/json")


def _refusal_problem(desk, method: str, path: str, body, field: str | None) -> str | None:
    """None when the request is refused as it should be; else what went wrong."""
    before = fingerprint()
    response = _send(desk["client"], method, path, body)
    if response.status_code != 400:
        return f"{body!r:.120}: {response.status_code} {response.content[:150]!r}"
    answer = response.json()
    if not isinstance(answer, dict) or not answer or (field is not None and field not in answer):
        return f"{body!r:.120}: 400 without a message for {field}: {answer!r:.150}"
    if fingerprint() != before:
        return f"{body!r:.120}: refused but something was written"
    return None


def _assert_all_refused(desk, method: str, path: str, bodies: list, field: str | None) -> None:
    problems = [p for body in bodies if (p := _refusal_problem(desk, method, path, body, field))]
    assert not problems, "\n".join(problems)


AGENT = {"name": "hostile", "strategy": "trading.strategies.sma_cross.SmaCross", "symbols": ["BTC/USDT"],
         "capital": "1000", "params": {"fast": 2, "slow": 4}}
LIMITS = {"agent": None, "max_order_notional": "1000"}

# (endpoint id, method, path (with {agent}), a valid body, field, hostile values)
FIELD_CASES = [
    ("agent-create", "post", "/api/agents/", AGENT, "capital", BAD_POSITIVE_NUMBERS),
    ("agent-create", "post", "/api/agents/", AGENT, "tick_seconds", BAD_COUNTS),
    ("agent-create", "post", "/api/agents/", AGENT, "symbols", BAD_SYMBOLS),
    ("agent-create", "post", "/api/agents/", AGENT, "name", BAD_NAMES),
    ("agent-create", "post", "/api/agents/", AGENT, "strategy", ["os.system", SQL, SCRIPT, "trading.strategies.nope.X",
                                                                 "", None, 3]),
    ("agent-create", "post", "/api/agents/", AGENT, "params",
     [{"fast": "NaN"}, {"fast": -3}, {"fast": 0}, {"fast": "Infinity"}, {"fast": 10**30}, {"slow": "abc"},
      {"nope": 1}, {SQL: 1}, "x", [], None]),
    ("agent-create", "post", "/api/agents/", AGENT, "exchange", [SQL, SCRIPT, "nope", "", 1]),
    ("agent-create", "post", "/api/agents/", AGENT, "feed", [SQL, SCRIPT, "nope", "ccxt:nope", "", 1]),
    ("agent-create", "post", "/api/agents/", AGENT, "mode", [SQL, "live", "LIVE ", "", 1, None]),
    ("agent-create", "post", "/api/agents/", AGENT, "timeframe", [SQL, "0s", "-5s", "NaNs", "abc", "", 1]),
    ("agent-update", "patch", "/api/agents/{agent}/", {}, "capital", BAD_POSITIVE_NUMBERS),
    ("agent-update", "patch", "/api/agents/{agent}/", {}, "symbols", BAD_SYMBOLS),
    ("agent-update", "patch", "/api/agents/{agent}/", {}, "status", ["paused", SQL]),
    ("agent-pause", "post", "/api/agents/{agent}/pause", {}, "reason", ["x" * 5000, [], {}]),
    ("kill-switch-activate", "post", "/api/kill-switch", {"mode": "HALT_ONLY", "reason": "x"}, "mode",
     [SQL, SCRIPT, "halt_only", "", None, 1, []]),
    ("kill-switch-activate", "post", "/api/kill-switch", {"mode": "HALT_ONLY", "reason": "x"}, "reason",
     ["", "   ", None, "x" * 5000, [], {}]),
    ("kill-switch-deactivate", "delete", "/api/kill-switch", {}, "reason", ["x" * 5000, [], {}]),
    ("breaker-reset", "post", "/api/circuit-breakers/reset", {"reason": "x"}, "reason", ["", None, "x" * 5000, []]),
    ("breaker-reset", "post", "/api/circuit-breakers/reset", {"reason": "x"}, "name",
     ["nope", SQL, SCRIPT, "", "stale_data:NOPE/USDT", [], 5]),
    # (null or "" is "no limit" there: allowed)
    ("risk-limits", "post", "/api/risk-limits/", LIMITS, "max_order_notional", [v for v in BAD_POSITIVE_NUMBERS
                                                                               if v not in (None, "")]),
    ("risk-limits", "post", "/api/risk-limits/", LIMITS, "max_position_notional", ["NaN", "Infinity", -5, 0, "abc"]),
    ("risk-limits", "post", "/api/risk-limits/", LIMITS, "price_band", ["NaN", -0.1, 0, 2, "Infinity", "abc"]),
    ("risk-limits", "post", "/api/risk-limits/", LIMITS, "max_open_orders", [c for c in BAD_COUNTS
                                                                            if c not in (None, "")]),
    ("risk-limits", "post", "/api/risk-limits/", LIMITS, "max_orders_per_minute", [-1, 0, "NaN", 2**63, "abc"]),
    ("risk-limits", "post", "/api/risk-limits/", LIMITS, "agent", [999999, -1, 0, "abc", SQL, 2**63, [], 1.5]),
]


@pytest.mark.parametrize(("method", "path", "base", "field", "values"), [
    pytest.param(*case[1:], id=f"{case[0]}-{case[4]}") for case in FIELD_CASES])
def test_write_when_field_hostile_then_400_naming_it_and_nothing_written(desk, method, path, base, field, values):
    _assert_all_refused(desk, method, path.format(agent=desk["agent"].pk), [{**base, field: v} for v in values], field)


WRITES = [("post", "/api/agents/"), ("patch", "/api/agents/{agent}/"), ("post", "/api/agents/{agent}/pause"),
          ("post", "/api/agents/{agent}/resume"), ("post", "/api/agents/{agent}/stop"),
          ("post", "/api/kill-switch"), ("delete", "/api/kill-switch"), ("post", "/api/circuit-breakers/reset"),
          ("post", "/api/risk-limits/")]
BAD_BODIES = [[], [1, 2], "text", 5, None, True]


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_write_when_body_not_a_json_object_then_400_and_nothing_written(desk, method, path):
    # (a DELETE without a body is the runbook's bare curl: `null` is not sent there)
    bodies = [b for b in BAD_BODIES if not (method == "delete" and b is None)]
    _assert_all_refused(desk, method, path.format(agent=desk["agent"].pk), bodies, None)


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_write_when_body_malformed_then_400_and_nothing_written(desk, method, path):
    before = fingerprint()
    for raw in (b"{", b'{"reason": NaN}', b'{"reason": Infinity}', b"\xff\xfe", b'{"a":1}{"b":2}'):
        response = getattr(desk["client"], method)(path.format(agent=desk["agent"].pk), raw,
                                                   content_type="application/json")
        assert response.status_code == 400, (raw, response.content[:200])
    assert fingerprint() == before


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_write_when_body_oversized_then_413_or_400_and_nothing_written(desk, method, path, settings):
    body = json.dumps({"reason": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1), "mode": "HALT_ONLY"})
    before = fingerprint()
    response = getattr(desk["client"], method)(path.format(agent=desk["agent"].pk), body,
                                               content_type="application/json")
    assert response.status_code in (400, 413), (response.status_code, response.content[:200])
    assert fingerprint() == before


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/api/agents/999999999/pause", {}), ("patch", "/api/agents/999999999/", {"capital": "5"}),
    ("delete", "/api/agents/999999999/", {}), ("post", "/api/agents/-1/pause", {}),
    ("post", "/api/agents/99999999999999999999999/pause", {}), ("get", "/api/orders/99999999999999999999999/", None),
    ("post", f"/api/agents/{SQL}/pause", {}),
])
def test_write_when_agent_unknown_then_json_404_and_nothing_written(desk, method, path, body):
    before = fingerprint()
    response = _send(desk["client"], method, path, body) if body is not None else desk["client"].get(path)
    assert response.status_code == 404 and "detail" in response.json()
    assert fingerprint() == before


FILTERS = [
    ("/api/orders/", "agent", ["-1", "0", "abc", "NaN", "1e400", "9" * 40, SQL]),
    ("/api/orders/", "status", [SQL, SCRIPT, "EXECUTED "]),
    ("/api/orders/", "side", [SQL, "BUY"]),
    ("/api/orders/", "created_after", ["yesterday", SQL, "2024-13-45", "9999999999999"]),
    ("/api/orders/", "limit", ["-1", "abc", "NaN"]),
    ("/api/orders/", "offset", ["-1", "abc", "9" * 40, "1"]),  # cursor pagination: offset is refused
    ("/api/orders/", "cursor", [SQL, SCRIPT, "%%%", "cD0nIDsgRFJPUCBUQUJMRSBvcmRlcnM7IC0t"]),
    ("/api/audit/", "limit", ["0", "-1", "abc"]),
    ("/api/fills/", "order", ["-1", "abc", SQL]),
    ("/api/positions/", "agent", ["abc", SQL]),
    ("/api/positions/", "open", ["maybe", SQL]),
    ("/api/portfolio-snapshots/", "created_before", ["abc", SQL]),
    ("/api/agent-performance/", "agent", ["abc", "-5"]),
    ("/api/agents/", "status", [SQL, "ACTIVE"]),
]


@pytest.mark.parametrize(("path", "name", "values"), FILTERS, ids=[f"{p}?{n}" for p, n, _ in FILTERS])
def test_read_when_filter_hostile_then_400_naming_it(desk, path, name, values):
    for value in values:
        response = desk["client"].get(path, {name: value})
        assert response.status_code == 400, (name, value, response.status_code, response.content[:200])
        assert name in response.json(), response.json()


def test_reason_when_sql_and_script_then_stored_as_text_and_escaped_in_the_admin(desk):
    reason = f"{SQL} {SCRIPT}"
    response = _send(desk["client"], "post", "/api/kill-switch", {"mode": "HALT_ONLY", "reason": reason})
    assert response.status_code == 200 and response.json()["reason"] == reason  # JSON: data, not markup
    assert Order.objects.count() == 1  # the table is still there
    assert KillSwitchEvent.objects.get().reason == reason  # stored as the text it is
    for page in ("/admin/safety/killswitchevent/", "/admin/"):  # the banner shows the reason
        html = desk["client"].get(page).content
        assert SCRIPT.encode() not in html, page


# --- commands ------------------------------------------------------------------------------------


def run_command(name: str, *args: str) -> tuple[int, str, str]:
    """A management command as `python manage.py NAME ARGS` runs it (BaseCommand.run_from_argv:
    argparse errors exit 2, CommandError prints one line and exits with its code), in this process
    on the test database — without run_from_argv's closing of the test's connection. Anything else
    (what would be a traceback) raises and fails the test."""
    out, err = io.StringIO(), io.StringIO()
    command = ManagementUtility(["manage.py", name]).fetch_command(name)
    command._called_from_command_line = True
    with redirect_stdout(out), redirect_stderr(err):
        try:
            options = vars(command.create_parser("manage.py", name).parse_args(list(args)))
            positional = options.pop("args", ())
            command.execute(*positional, **options)
        except SystemExit as exc:  # argparse
            return (exc.code if isinstance(exc.code, int) else 1), out.getvalue(), err.getvalue()
        except CommandError as exc:
            return exc.returncode, out.getvalue(), f"{err.getvalue()}CommandError: {exc}\n"
    return 0, out.getvalue(), err.getvalue()


CLI_CASES = [
    ("killswitch", "activate", "--mode", SQL, "--reason", "x"),
    ("killswitch", "activate", "--mode", "HALT_ONLY", "--reason", ""),
    ("killswitch", "activate", "--mode", "HALT_ONLY", "--reason", "x" * 5000),
    ("killswitch", "deactivate", "--reason", "x" * 5000),
    ("breakers", "reset", "--name", SQL, "--reason", "x"),
    ("breakers", "reset", "--name", "stale_data:NOPE/USDT", "--reason", "x"),
    ("breakers", "reset", "--reason", "  "),
    ("agents", "pause", SQL),
    ("agents", "resume", "no-such-agent"),
    ("agents", "stop", ""),
    ("agents", "frobnicate", "x"),
    ("import_candles", "/nonexistent.csv", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m"),
    ("import_candles", "{csv}", "--exchange", "binance", "--symbol", SQL, "--timeframe", "1m"),
    ("import_candles", "{csv}", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "-1m"),
    ("download_candles", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m", "--since", "yesterday"),
    ("download_candles", "--exchange", SQL, "--symbol", "BTC/USDT", "--timeframe", "1m", "--since", "2024-01-01"),
    ("backup", "--keep", "-1"),
    ("backup", "--keep", "NaN"),
    ("restore", "/nonexistent.dump"),
    ("exchange_server", "--port", "abc"),
    ("exchange_server", "--port", "-5"),
    ("exchange_server", "--fund", "USDT=NaN"),
    ("exchange_server", "--fund", "USDT=-100"),
    ("up", "--web-port", "NaN"),
    ("up", "--strategy-workers", "-1"),
    ("bench", "--only", SQL),
]


@pytest.mark.parametrize("argv", CLI_CASES, ids=[" ".join(c)[:60] for c in CLI_CASES])
def test_command_when_input_hostile_then_clear_error_nonzero_exit_and_nothing_written(desk, argv, tmp_path):
    csv = tmp_path / "candles.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,1,1,1,1\n")
    before = fingerprint()
    code, out, err = run_command(*(a.replace("{csv}", str(csv)) for a in argv))
    assert code != 0, (out, err)
    assert "Traceback" not in err and ("CommandError: " in err or "error: " in err), err
    assert fingerprint() == before
