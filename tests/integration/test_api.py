"""The trading API: every write by every role (from a remote address, so no loopback exception
applies) with nothing written when refused; bad input answered 400 per field with nothing
written; filters, pagination, read endpoints, /api/status, throttling."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.authtoken.models import Token

from safety.models import AuditEvent
from tests.desk import REMOTE, make_book, make_role_users, open_stale_data_breaker
from tests.factories import make_agent
from tests.helpers import wait_until
from trading.models import Agent, Order
from trading.services.agents import agent_set_status
from trading.services.orders import order_create

pytestmark = pytest.mark.django_db
D = Decimal

NEW_AGENT = {
    "name": "api-made", "strategy": "trading.strategies.sma_cross.SmaCross",
    "params": {"fast": 3, "slow": 8, "exposure": "0.5"}, "symbols": ["BTC/USDT"], "capital": "5000",
    "tick_seconds": 7,
}


@pytest.fixture
def users(django_user_model):
    return make_role_users()


@pytest.fixture
def clients(users):
    made = {"anonymous": Client(REMOTE_ADDR=REMOTE)}
    for role, user in users.items():
        client = Client(REMOTE_ADDR=REMOTE)
        client.force_login(user)
        made[role] = client
    return made


def call(client: Client, method: str, path: str, body=None):
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, body, content_type="application/json")


def world() -> tuple:
    """Everything an agent write could change: agents, their schedules, the audit log."""
    agents = sorted((a["id"], a["name"], a["status"], a["tick_seconds"], str(a["capital"]))
                    for a in Agent.objects.values())
    tasks = sorted(PeriodicTask.objects.filter(name__startswith="tick-agent-").values_list("name", "enabled"))
    return agents, tasks, AuditEvent.objects.count()


# --- the role matrix -------------------------------------------------------------------------------

# action -> (method, path for an agent id, body, status when allowed)
WRITES = {
    "create": ("post", lambda pk: "/api/agents/", NEW_AGENT, 201),
    "update": ("patch", lambda pk: f"/api/agents/{pk}/", {"tick_seconds": 9}, 200),
    "delete": ("delete", lambda pk: f"/api/agents/{pk}/", None, 204),
    "pause": ("post", lambda pk: f"/api/agents/{pk}/pause", {"reason": "role test"}, 200),
    "resume": ("post", lambda pk: f"/api/agents/{pk}/resume", {}, 200),
    "stop": ("post", lambda pk: f"/api/agents/{pk}/stop/", {"reason": "role test"}, 200),
}
ALLOWED = {
    "anonymous": set(),
    "viewer": set(),
    "operator": {"pause", "resume", "stop"},
    "admin": set(WRITES),
}


@pytest.mark.parametrize("role", list(ALLOWED))
@pytest.mark.parametrize("action", list(WRITES))
def test_agent_write_when_role_lacks_permission_then_refused_and_nothing_written(clients, role, action):
    agent = make_agent()
    if action == "resume":
        agent_set_status(agent=agent, status="paused", actor="setup", source="test")
    before = world()
    method, path, body, ok = WRITES[action]
    response = call(clients[role], method, path(agent.pk), body)
    if action in ALLOWED[role]:
        assert response.status_code == ok, response.content
        assert world() != before
        assert AuditEvent.objects.filter(actor=f"{role}-user").exists()
    else:
        assert response.status_code in (401, 403), response.content
        assert world() == before


def test_writes_when_anonymous_from_loopback_then_allowed_in_paper_mode_only(users, settings):
    agent = make_agent()
    local = Client(REMOTE_ADDR="127.0.0.1")
    assert call(local, "post", f"/api/agents/{agent.pk}/pause", {}).status_code == 200
    assert AuditEvent.objects.get(action="agent.pause").actor == "anonymous@127.0.0.1"
    settings.ALLOW_LOOPBACK_WRITES = False  # live mode's default
    before = world()
    assert call(local, "post", f"/api/agents/{agent.pk}/resume", {}).status_code in (401, 403)
    assert call(local, "post", "/api/agents/", NEW_AGENT).status_code in (401, 403)
    assert world() == before


def test_pause_when_operator_uses_a_token_then_paused_and_audited_with_address(users):
    token = Token.objects.create(user=users["operator"])
    agent = make_agent()
    response = Client(REMOTE_ADDR=REMOTE).post(f"/api/agents/{agent.pk}/pause/", {"reason": "news at 14:00"},
                                               content_type="application/json",
                                               HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "paused" and body["schedule"]["enabled"] is False
    event = AuditEvent.objects.get(action="agent.pause")
    assert (event.actor, event.source, event.details["reason"]) == ("operator-user", REMOTE, "news at 14:00")


def test_create_when_admin_then_201_with_schedule_and_audited(clients):
    response = call(clients["admin"], "post", "/api/agents/", NEW_AGENT)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "active" and body["params"] == {"fast": 3, "slow": 8, "exposure": "0.5"}
    assert body["schedule"] == {"name": f"tick-agent-{body['id']}", "enabled": True, "every_seconds": 7,
                                "queue": "strategy", "last_run_at": None, "total_run_count": 0}
    assert body["performance"] is None
    event = AuditEvent.objects.get(action="agent.create")
    assert event.actor == "admin-user" and event.details["name"] == "api-made"


# --- bad input ------------------------------------------------------------------------------------

BAD_CREATES = [
    ({"strategy": "trading.strategies.nope.Nope"}, "strategy"),
    ({"strategy": "os.path.join"}, "strategy"),  # never import a module outside trading.strategies
    ({"symbols": ["DOGE/NOWHERE"]}, "symbols"),
    ({"symbols": []}, "symbols"),
    ({"symbols": "BTC/USDT"}, "symbols"),
    ({"params": {"fast": "quick"}}, "params"),
    ({"params": {"fast": 9, "slow": 3}}, "params"),
    ({"params": {"colour": "red"}}, "params"),
    ({"params": {"fast": "\u0000"}}, "params"),
    ({"capital": "-5"}, "capital"),
    ({"capital": "lots"}, "capital"),
    ({"timeframe": "7m"}, "timeframe"),
    ({"tick_seconds": 0}, "tick_seconds"),
    ({"feed": "carrier-pigeon"}, "feed"),
    ({"exchange": "no-such-exchange"}, "exchange"),
    ({"mode": "live"}, "mode"),  # PAPER_TRADING_MODE is on
    ({"name": ""}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": "nul\u0000name"}, "name"),
    ({"status": "paused"}, "status"),
    ({"last_tick_at": None}, "last_tick_at"),
]


@pytest.mark.parametrize(("change", "field"), BAD_CREATES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_CREATES)])
def test_create_when_input_bad_then_400_naming_the_field_and_nothing_written(clients, change, field):
    before = world()
    response = call(clients["admin"], "post", "/api/agents/", {**NEW_AGENT, **change})
    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body) == [field], body
    assert body[field] and all(isinstance(m, str) and m for m in body[field]), body
    assert world() == before


def test_create_when_name_taken_or_field_missing_then_400_and_nothing_written(clients):
    make_agent(name="taken")
    before = world()
    assert call(clients["admin"], "post", "/api/agents/", {**NEW_AGENT, "name": "taken"}).json() == {
        "name": ["an agent named 'taken' already exists"]}
    body = call(clients["admin"], "post", "/api/agents/", {"name": "half"}).json()
    assert set(body) == {"strategy", "symbols", "capital"}
    assert world() == before


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"just a string"', "null"])
def test_create_when_body_not_an_object_then_400_and_nothing_written(clients, raw):
    before = world()
    response = clients["admin"].post("/api/agents/", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert world() == before


def test_create_when_body_is_a_form_then_415(clients):
    response = clients["admin"].post("/api/agents/", {"name": "form"})
    assert response.status_code == 415
    assert not Agent.objects.exists()


def test_update_when_invalid_or_status_then_400_and_nothing_changed(clients):
    agent = make_agent(tick_seconds=5)
    before = world()
    for change, field in (({"tick_seconds": -1}, "tick_seconds"), ({"params": {"slow": 1}}, "params"),
                          ({"status": "stopped"}, "status"), ({"symbols": ["NOPE/USDT"]}, "symbols")):
        response = call(clients["admin"], "patch", f"/api/agents/{agent.pk}/", change)
        assert response.status_code == 400 and field in response.json(), (change, response.content)
    assert world() == before


def test_update_when_valid_then_schedule_follows(clients):
    agent = make_agent(tick_seconds=5)
    response = call(clients["admin"], "patch", f"/api/agents/{agent.pk}/", {"tick_seconds": 30, "capital": "123.5"})
    assert response.status_code == 200, response.content
    assert response.json()["schedule"]["every_seconds"] == 30
    assert Agent.objects.get(pk=agent.pk).capital == D("123.5")


def test_delete_when_agent_has_orders_then_400_and_kept(clients, fixed_price_feed):
    agent = make_agent()
    order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=D("0.1"), enqueue=False)
    response = call(clients["admin"], "delete", f"/api/agents/{agent.pk}/")
    assert response.status_code == 400 and "agent" in response.json()
    assert Agent.objects.filter(pk=agent.pk).exists()


@pytest.mark.parametrize(("method", "path", "body"), [
    ("get", "/api/agents/999999/", None), ("patch", "/api/agents/999999/", {"tick_seconds": 9}),
    ("post", "/api/agents/999999/pause", {}), ("get", "/api/orders/999999/", None),
    ("get", "/api/no-such-endpoint/", None),
])
def test_unknown_object_or_url_then_json_404(clients, method, path, body):
    response = call(clients["admin"], method, path, body)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json" and "detail" in response.json()


def test_pause_when_reason_too_long_then_400_and_still_active(clients):
    agent = make_agent()
    response = call(clients["operator"], "post", f"/api/agents/{agent.pk}/pause", {"reason": "x" * 1001})
    assert response.status_code == 400 and "reason" in response.json()
    assert Agent.objects.get(pk=agent.pk).status == "active"


# --- reads: orders and their filters, fills, positions, snapshots, performance ----------------------


@pytest.fixture
def book(fixed_price_feed):
    made = make_book(fixed_price_feed)
    # Backdate the first buy by a day so the time filters have something to separate.
    Order.objects.filter(pk=made["buy"].pk).update(created_at=timezone.now() - timedelta(days=1))
    return made


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_orders_when_filtered_then_only_matching_newest_first(clients, book):
    get = clients["viewer"].get
    assert ids(get("/api/orders/")) == [book["rejected"].pk, book["pending"].pk, book["sell"].pk, book["buy"].pk]
    assert ids(get(f"/api/orders/?agent={book['btc'].pk}")) == [book["sell"].pk, book["buy"].pk]
    assert ids(get("/api/orders/", {"symbol": "ETH/USDT", "status": "pending"})) == [book["pending"].pk]
    assert ids(get("/api/orders/?status=rejected")) == [book["rejected"].pk]
    assert ids(get("/api/orders/?side=sell")) == [book["sell"].pk]
    cut = (timezone.now() - timedelta(hours=1)).isoformat()
    assert ids(get("/api/orders/", {"created_before": cut})) == [book["buy"].pk]
    assert book["buy"].pk not in ids(get("/api/orders/", {"created_after": cut}))
    assert ids(get("/api/orders/", {"status": ""})) == ids(get("/api/orders/"))  # empty filter = no filter
    rejected = get(f"/api/orders/{book['rejected'].pk}/").json()
    assert rejected["status"] == "rejected" and rejected["reject_reason"].startswith("kill switch")


def test_orders_when_paginated_then_limit_and_cursor_links_walk_every_order_once(clients, book):
    everything = ids(clients["viewer"].get("/api/orders/"))
    first = clients["viewer"].get("/api/orders/?limit=2").json()
    # Keyset pagination (issue 10): no total count (a COUNT over millions of orders), next/previous links.
    assert set(first) == {"next", "previous", "results"} and first["previous"] is None
    second = clients["viewer"].get(first["next"]).json()
    assert [o["id"] for o in first["results"] + second["results"]] == everything
    assert second["next"] is None
    back = clients["viewer"].get(second["previous"]).json()
    assert [o["id"] for o in back["results"]] == everything[:2]
    assert len(clients["viewer"].get("/api/orders/?limit=99999999999999999999").json()["results"]) == 4


def _walk(client: Client, url: str) -> tuple[list[int], list[int]]:
    """Every id following `next` from `url`; every id of the last page and those following `previous` back from it."""
    forward, page = [], client.get(url).json()
    forward += [row["id"] for row in page["results"]]
    while page["next"]:
        page = client.get(page["next"]).json()
        forward += [row["id"] for row in page["results"]]
    backward = [row["id"] for row in page["results"]]
    while page["previous"]:
        page = client.get(page["previous"]).json()
        backward = [row["id"] for row in page["results"]] + backward
    return forward, backward


def test_orders_when_paged_through_equal_timestamps_then_compiled_pages_match_the_orm_and_compile_once(
        clients, book, monkeypatch):
    """ORDER_PAGES (tinywindow.rows.PagedQuery) runs the page's SQL compiled once per shape. For
    every filter, page size, cursor direction and offset among equal timestamps it answers the
    pages the ORM queryset gave, and walking the same pages again compiles nothing."""
    from types import SimpleNamespace

    from django.db.models.sql.compiler import SQLCompiler

    from trading.api import views
    from trading.api.serializers import ORDER_ROWS
    from trading.selectors import orders_list

    agent = book["btc"]
    stamps = [timezone.now() - timedelta(minutes=minutes) for minutes in (5, 5, 5, 9, 9, 30)]
    for i in range(18):  # three orders at most timestamps: the cursor needs its offset among equals
        Order.objects.create(client_order_id=f"paged-{i}", agent=agent, exchange="paper", mode="paper",
                             symbol="BTC/USDT", side="buy" if i % 2 else "sell", quantity=D("1"),
                             status="executed" if i % 3 else "rejected")
        Order.objects.filter(client_order_id=f"paged-{i}").update(created_at=stamps[i % len(stamps)])
    cut = (timezone.now() - timedelta(minutes=10)).isoformat().replace("+", "%2B")
    queries = ["", f"agent={agent.pk}&", "symbol=BTC/USDT&status=executed&", f"side=buy&created_after={cut}&"]
    client = clients["viewer"]

    def walks() -> list[tuple[list[int], list[int]]]:
        return [_walk(client, f"/api/orders/?{query}limit={limit}") for query in queries for limit in (2, 3)]

    compiled_pages = walks()
    with monkeypatch.context() as orm:  # the same view on the ORM's queryset, compiled per request
        orm.setattr(views, "ORDER_PAGES", SimpleNamespace(where=lambda **f: orders_list(base=ORDER_ROWS.base, **f)))
        assert walks() == compiled_pages
    everything = list(Order.objects.order_by("-created_at", "-id").values_list("id", flat=True))
    assert compiled_pages[0][0] == everything and compiled_pages[1][0] == everything  # forward: each order once

    compiles = []
    real_as_sql = SQLCompiler.as_sql
    monkeypatch.setattr(SQLCompiler, "as_sql", lambda self, *a, **k: compiles.append(self.query.model)
                        or real_as_sql(self, *a, **k))
    assert walks() == compiled_pages
    assert Order not in compiles


@pytest.mark.parametrize(("query", "field"), [
    ("offset=1", "offset"), ("cursor=not-base64!", "cursor"), ("cursor=cD1ub3QtYS1kYXRl", "cursor"),  # p=not-a-date
    ("cursor=cD0yMDI0LTAxLTAxKzEyOjAwOjAw", "cursor"),  # p=2024-01-01 12:00:00, naive
    ("limit=0", "limit"), ("limit=abc", "limit"),
])
def test_orders_when_pagination_input_bad_then_400_naming_it(clients, book, query, field):
    response = clients["viewer"].get(f"/api/orders/?{query}")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_orders_when_listed_then_each_row_is_the_model_serializers_output(clients, book):
    """The hand-written row writer (ORDER_ROWS) answers what OrderSerializer (a ModelSerializer,
    the schema) would, value for value: decimals, nulls, datetimes, the agent's id and name."""
    from trading.api.serializers import OrderSerializer

    Order.objects.filter(pk=book["pending"].pk).update(price=D("1234.5"), reference_price=D("-0.0000000001"))
    Order.objects.filter(pk=book["buy"].pk).update(created_at=timezone.now().replace(microsecond=0))
    expected = OrderSerializer(Order.objects.select_related("agent").order_by("-created_at", "-id"), many=True).data
    listed = clients["viewer"].get("/api/orders/").json()["results"]
    assert listed == json.loads(json.dumps(expected))
    assert any(row["price"] is None for row in listed) and any(row["price"] == "1234.5000000000" for row in listed)


def test_read_endpoints_when_token_authenticated_then_bounded_queries(users, book, django_assert_max_num_queries):
    """One query authenticates (token, user and groups together), one reads: the role check and
    the status read add none; a page of orders has no COUNT."""
    token = Token.objects.create(user=users["viewer"])
    client = Client(REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION=f"Token {token.key}")
    with django_assert_max_num_queries(2):
        assert client.get("/api/status").status_code == 200
    with django_assert_max_num_queries(2):
        assert client.get("/api/orders/").status_code == 200


def test_token_when_unknown_or_user_inactive_then_401_and_when_viewer_writes_then_403(users, book):
    token = Token.objects.create(user=users["viewer"])
    client = Client(REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/orders/").status_code == 200
    assert call(client, "post", f"/api/agents/{book['btc'].pk}/pause", {}).status_code == 403  # the role still counts
    assert Client(REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION="Token " + "0" * 40).get("/api/status").status_code == 401
    users["viewer"].is_active = False
    users["viewer"].save()
    assert client.get("/api/status").status_code == 401
    operator = Client(REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=users['operator'])}")
    assert call(operator, "post", f"/api/agents/{book['btc'].pk}/pause", {}).status_code == 200


@pytest.mark.parametrize(("query", "field"), [
    ("status=lost", "status"), ("agent=abc", "agent"), ("agent=0", "agent"),
    ("created_after=yesterday", "created_after"),
    ("created_before=2024-13-45", "created_before"), ("side=short", "side"), ("symbol=" + "X" * 41, "symbol"),
    ("symbol=%00", "symbol"),
])
def test_orders_when_filter_invalid_then_400_naming_it(clients, query, field):
    response = clients["viewer"].get(f"/api/orders/?{query}")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_fills_positions_snapshots_performance_when_book_exists_then_listed(clients, book):
    get = clients["viewer"].get
    fills = get(f"/api/fills/?agent={book['btc'].pk}").json()["results"]
    assert [f["order"] for f in fills] == [book["sell"].pk, book["buy"].pk]
    assert D(fills[0]["realized_pnl"]) > 0
    assert get(f"/api/fills/?order={book['buy'].pk}").json()["count"] == 1
    positions = get("/api/positions/").json()["results"]
    assert [(p["agent_name"], p["symbol"], D(p["quantity"])) for p in positions] == [("btc-bot", "BTC/USDT", 0)]
    assert get("/api/positions/?open=true").json()["count"] == 0
    snapshots = get("/api/portfolio-snapshots/").json()
    assert snapshots["count"] == 1 and D(snapshots["results"][0]["realized_pnl"]) > 0
    performance = get("/api/agent-performance/").json()["results"]
    assert {p["agent_name"]: p["trades"] for p in performance} == {"btc-bot": 1, "eth-bot": 0}
    agent = get(f"/api/agents/{book['btc'].pk}/").json()
    assert agent["performance"]["trades"] == 1 and D(agent["performance"]["total_pnl"]) > 0


def test_snapshots_when_listed_then_totals_only_and_each_snapshot_whole_at_its_own_url(clients, book):
    """A snapshot holds a row per agent (about 1.5 MB at 10,000 agents; a page of 100 took 1.4-2.2 s
    at 12,000): the list pages totals and reads no list from the database; one snapshot, or the
    newest, comes whole at its own URL."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from trading.models import PortfolioSnapshot
    from trading.services.snapshots import portfolio_snapshot_take

    get = clients["viewer"].get
    portfolio_snapshot_take()
    with CaptureQueriesContext(connection) as queries:
        listing = get("/api/portfolio-snapshots/").json()
    assert listing["count"] == 2
    assert all("agents" not in s and "positions" not in s and "equity" in s for s in listing["results"])
    assert not [q["sql"] for q in queries if '"portfolio_snapshots"."agents"' in q["sql"]]
    oldest, newest = listing["results"][-1]["id"], listing["results"][0]["id"]
    whole = get(f"/api/portfolio-snapshots/{oldest}/").json()
    assert whole["id"] == oldest and {a["agent"] for a in whole["agents"]} == {"btc-bot", "eth-bot"}
    assert isinstance(whole["positions"], list) and D(whole["equity"]) == D(listing["results"][-1]["equity"])
    latest = get("/api/portfolio-snapshots/latest/")
    assert latest.status_code == 200 and latest.json()["id"] == newest and len(latest.json()["agents"]) == 2
    assert get("/api/portfolio-snapshots/999999/").status_code == 404
    PortfolioSnapshot.objects.all().delete()
    missing = get("/api/portfolio-snapshots/latest/")
    assert missing.status_code == 404 and "snapshot" in missing.json()["detail"]


def test_agents_when_listed_then_a_page_at_a_time_with_a_count_and_bounded_queries(
        users, django_assert_max_num_queries):
    """GET /api/agents/ answered every agent at once (1.8-2.1 s and 7.7 MB at 10,000 agents):
    it is paginated as the other lists, and a page costs the same queries however many agents there are."""
    made = [make_agent(name=f"paged-{n}") for n in range(5)]
    agent_set_status(agent=made[1], status="paused", reason="page test", actor="test", source="test")
    client = Client(REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=users['viewer'])}")
    with django_assert_max_num_queries(3):  # token, count, page
        first = client.get("/api/agents/?limit=2").json()
    assert first["count"] == 5 and first["previous"] is None and len(first["results"]) == 2
    walked, page = [], first
    while True:
        walked += [(a["id"], a["name"], a["schedule"]["every_seconds"]) for a in page["results"]]
        if page["next"] is None:
            break
        page = client.get(page["next"]).json()
    assert walked == [(a.pk, a.name, 5) for a in made]  # by id, each once, with its schedule
    paused = client.get("/api/agents/?status=paused").json()
    assert paused["count"] == 1 and [a["name"] for a in paused["results"]] == ["paged-1"]
    for query, field in (("limit=0", "limit"), ("offset=-1", "offset"), ("status=lost", "status")):
        response = client.get(f"/api/agents/?{query}")
        assert response.status_code == 400 and field in response.json(), response.content


@pytest.mark.parametrize("path", ["/api/status", "/api/agents/", "/api/orders/", "/api/fills/", "/api/positions/",
                                  "/api/portfolio-snapshots/", "/api/agent-performance/"])
def test_read_when_viewer_then_200_and_when_anonymous_remote_then_refused(clients, path):
    assert clients["viewer"].get(path).status_code == 200
    assert clients["anonymous"].get(path).status_code in (401, 403)


# --- /api/status ------------------------------------------------------------------------------------


def test_status_when_quiet_then_paper_inactive_closed_and_counts(clients):
    make_agent()
    agent_set_status(agent=make_agent(), status="paused", actor="a", source="s")
    body = clients["viewer"].get("/api/status").json()
    assert body["mode"] == "PAPER"
    assert body["kill_switch"]["active"] is False
    assert body["circuit_breakers"] == {"status": "CLOSED", "open": []}
    assert body["agents"] == {"active": 1, "paused": 1, "stopped": 0, "total": 2}
    assert body["latest_snapshot"] is None and body["open_orders"] == 0


def test_status_when_kill_switch_active_breaker_open_and_snapshot_then_all_shown(clients, book, settings):
    settings.PAPER_TRADING_MODE = False
    make_agent(name="stale-watch")
    open_stale_data_breaker("BTC/USDT")
    body = clients["viewer"].get("/api/status/").json()
    assert body["mode"] == "LIVE"
    assert body["kill_switch"]["active"] is True and body["kill_switch"]["mode"] == "HALT_ONLY"
    assert body["circuit_breakers"]["status"] == "OPEN"
    assert [b["name"] for b in body["circuit_breakers"]["open"]] == ["stale_data:BTC/USDT"]
    assert body["open_orders"] == 1  # the pending ETH order
    assert D(body["latest_snapshot"]["equity"]) > 0


def test_status_when_built_by_hand_then_the_status_serializers_output(clients, book, settings):
    """/api/status writes its body without DRF's serializers (issue 10): it must still be what
    SystemStatusSerializer (the schema) writes, open breaker, kill switch and snapshot included."""
    from tinywindow.status import system_status
    from trading.api.serializers import SystemStatusSerializer

    open_stale_data_breaker("BTC/USDT")
    body = clients["viewer"].get("/api/status").json()
    current = system_status()
    expected = SystemStatusSerializer({
        "mode": current.mode, "kill_switch": current.kill_switch,
        "circuit_breakers": {"status": current.breaker_status, "open": current.open_breakers},
        "agents": {**current.agents, "total": sum(current.agents.values())},
        "latest_snapshot": current.latest_snapshot, "open_orders": current.open_orders, "at": body["at"]}).data
    assert body == json.loads(json.dumps(expected))
    assert body["circuit_breakers"]["open"] and body["latest_snapshot"] and body["kill_switch"]["changed_at"]


def test_fast_renderer_when_orders_and_status_then_bytes_equal_drfs():
    from rest_framework.renderers import JSONRenderer

    from tinywindow.api import FastJSONRenderer

    data = {"results": [{"id": 1, "reason": "line\u2028sep\u2029 \"quoted\" é \x00", "price": None, "ok": True,
                         "at": timezone.now(), "fee": D("1.50")}], "agents": {1: 2}, "next": None}
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)
    assert FastJSONRenderer().render({"n": 2**70}) == JSONRenderer().render({"n": 2**70})  # past orjson: DRF's


# --- throttling -------------------------------------------------------------------------------------


def _set_rates(settings, *, anon: str, user: str) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": anon, "user": user}}


def _user_counters(user_pattern: str = "*"):
    """The throttle's Redis, and the keys of its per-window counters of the users matching `user_pattern`."""
    import redis
    from django.conf import settings

    store = redis.Redis.from_url(settings.CACHES["throttle"]["LOCATION"])
    return store, store.keys(f"{settings.CACHES['throttle']['KEY_PREFIX']}:sw:throttle_user_{user_pattern}")


@pytest.fixture
def low_rates(settings):
    _set_rates(settings, anon="2/minute", user="3/minute")


def test_throttle_when_user_exceeds_rate_then_429_with_retry_after(clients, low_rates):
    codes = [clients["viewer"].get("/api/agents/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert int(clients["viewer"].get("/api/agents/")["Retry-After"]) > 0
    assert clients["operator"].get("/api/agents/").status_code == 200  # counted per user


def test_throttle_when_counting_then_one_expiring_counter_per_window(clients, low_rates):
    """O(1) per request (issue 10): a counter per client and window, with a lifetime, never a
    growing list of timestamps."""
    clients["viewer"].get("/api/agents/")
    clients["viewer"].get("/api/agents/")
    store, keys = _user_counters()
    assert len(keys) == 1 and int(store.get(keys[0])) == 2
    assert 0 < store.ttl(keys[0]) <= 120


def _hourly_rate(settings, user_rate: str) -> None:
    """Set the user rate (per hour), out of reach of an hour's turn (which would split the counts)."""
    import time

    _set_rates(settings, anon="600/minute", user=user_rate)
    wait_until(lambda: 5 < time.time() % 3600 < 3590, timeout=15, interval=0.5, message="clear of an hour's turn")


def _user_counter(user) -> int:
    store, keys = _user_counters(f"{user.pk}:*")
    return sum(int(store.get(key)) for key in keys)


def test_throttle_when_rate_allows_then_a_process_reserves_a_lease_of_one_percent(clients, users, settings):
    """A process asks Redis once per 1 % of the limit (issue 10), not once per request."""
    from tinywindow import throttling

    _hourly_rate(settings, "1000/hour")  # leases of 10
    assert [clients["viewer"].get("/api/status").status_code for _ in range(25)] == [200] * 25
    assert _user_counter(users["viewer"]) == 30  # three leases: 10 + 10 + 5 spent, 5 left here
    throttling._leases.clear()  # another process: it reserves its own
    assert clients["viewer"].get("/api/status").status_code == 200
    assert _user_counter(users["viewer"]) == 40


def test_throttle_when_processes_hold_leases_then_never_more_than_the_limit(clients, users, settings):
    """Reserved slots count as used: however many processes reserve, no more than the limit get through."""
    from tinywindow import throttling

    _hourly_rate(settings, "400/hour")  # leases of 4
    throttling._leases.clear()  # a fresh process: only this client's leases below
    admitted = abandoned = 0
    for request in range(1, 500):
        if request % 3 == 0:  # a new process every third request, leaving reserved slots unspent
            abandoned += sum(throttling._leases.values())
            throttling._leases.clear()
        if clients["viewer"].get("/api/status").status_code != 200:
            break
        admitted += 1
    assert _user_counter(users["viewer"]) == 400
    assert admitted + abandoned + sum(throttling._leases.values()) == 400
    assert admitted < 400 and abandoned > 0  # never one beyond the limit; slots left unspent cost some
    assert clients["viewer"].get("/api/status").status_code == 429


def test_throttle_when_kill_switch_activated_repeatedly_then_never_429(users, low_rates):
    local = Client(REMOTE_ADDR="127.0.0.1")
    for i in range(4):
        response = call(local, "post", "/api/kill-switch", {"mode": "HALT_ONLY", "reason": f"press {i}"})
        assert response.status_code == 200, response.content
    # Other calls are throttled (anonymous: 2 a minute here).
    assert [call(local, "get", "/api/kill-switch").status_code for _ in range(3)] == [200, 200, 429]


def test_throttle_when_its_redis_unreachable_then_requests_pass(clients, low_rates, settings):
    settings.CACHES = {**settings.CACHES, "throttle": {**settings.CACHES["throttle"],
                                                       "LOCATION": "redis://127.0.0.1:1/0"}}
    assert [clients["viewer"].get("/api/agents/").status_code for _ in range(5)] == [200] * 5


def test_throttle_defaults_when_unset_then_generous():
    from django.conf import settings

    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert rates == {"anon": "600/minute", "user": "6000/minute"}


def test_throttle_rate_when_malformed_in_env_then_clear_error_and_exit_2():
    import os

    from tests.helpers import manage

    result = manage("check", env={**os.environ, "API_THROTTLE_ANON": "lots"})
    assert result.returncode == 2
    assert "API_THROTTLE_ANON='lots' is not a rate like 600/minute" in result.stderr
    assert "Traceback" not in result.stderr


def test_api_root_when_viewer_then_links_to_every_endpoint_and_the_docs(clients):
    body = clients["viewer"].get("/api/").json()
    assert body["docs"].endswith("/api/docs/") and body["status"].endswith("/api/status")
    assert {"agents", "orders", "kill-switch", "circuit-breakers", "audit"} <= set(body)


def test_create_when_only_required_fields_then_defaults_apply(clients):
    body = {"name": "minimal", "strategy": "trading.strategies.sma_cross.SmaCross", "symbols": ["ETH/USDT"],
            "capital": "1000"}
    response = call(clients["admin"], "post", "/api/agents/", body)
    assert response.status_code == 201, response.content
    created = response.json()
    assert (created["timeframe"], created["tick_seconds"], created["exchange"], created["feed"], created["mode"]) == (
        "5s", 5, "paper", "synthetic", "paper")
    assert created["params"]  # the strategy's defaults, as stored


def test_drf_settings_when_read_before_any_view_is_imported_then_classes_load():
    """What Celery (and Flower) do at start: Django's checks read DRF's settings before any view
    module is imported. The pagination and throttle classes must not need rest_framework.views."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    code = ("import django; django.setup(); from rest_framework.settings import api_settings; "
            "print(api_settings.DEFAULT_PAGINATION_CLASS.__name__, len(api_settings.DEFAULT_THROTTLE_CLASSES))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "tinywindow.settings"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["LimitOffsetPagination", "2"]
