"""The admin as the desk uses it: the status banner on every page, the kill-switch page (roles,
confirmation step, through the service), breaker reset and agent actions by role, agents with
their performance and schedule, read-only records."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from safety.models import AuditEvent, CircuitBreakerEvent, CircuitBreakerState, KillSwitchEvent
from safety.services.breakers import breakers_check
from safety.services.kill_switch import kill_switch_engage, kill_switch_read_db
from tests.desk import make_book, make_role_users, open_stale_data_breaker
from tests.factories import make_agent
from trading.models import Agent

pytestmark = pytest.mark.django_db
KS_PAGE = "/admin/safety/killswitchstate/"


@pytest.fixture
def users(django_user_model):
    return make_role_users()


@pytest.fixture
def clients(users):
    made = {}
    for role, user in users.items():
        client = Client()
        client.force_login(user)
        made[role] = client
    return made


def banner(response) -> str:
    assert response.status_code == 200, response.status_code
    match = re.search(r'<div id="tw-desk-banner".*?</div>', response.content.decode(), re.S)
    assert match, "no desk banner on the page"
    return match.group(0)


# --- the banner -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/", "/admin/trading/order/", "/admin/safety/killswitchevent/",
                                  "/admin/trading/agent/", KS_PAGE, "/admin/password_change/"])
def test_banner_when_quiet_then_on_every_page_paper_inactive_closed(clients, path):
    html = banner(clients["viewer"].get(path))
    assert 'class="tw-banner tw-ok"' in html and 'data-kill-switch="inactive"' in html
    assert ">PAPER<" in html and "Kill switch: inactive" in html and "Circuit breakers: <strong>CLOSED" in html


def test_banner_when_kill_switch_active_then_red_with_mode_and_reason(clients):
    kill_switch_engage(mode="CLOSE_POSITIONS", reason="Market crash", actor="alice", source="test")
    html = banner(clients["viewer"].get("/admin/"))
    assert 'class="tw-banner tw-danger"' in html and 'data-kill-switch="active"' in html
    assert "KILL SWITCH ACTIVE (CLOSE_POSITIONS)" in html and "Market crash" in html


def test_banner_when_breaker_open_then_amber_naming_it(clients):
    make_agent()
    name = open_stale_data_breaker("BTC/USDT")
    html = banner(clients["viewer"].get("/admin/"))
    assert 'class="tw-banner tw-warning"' in html and f"{name} OPEN" in html and "<strong>OPEN" in html


def test_banner_when_live_mode_then_says_live(clients, settings):
    settings.PAPER_TRADING_MODE = False
    assert ">LIVE<" in banner(clients["viewer"].get("/admin/"))


def test_banner_when_redis_unreachable_then_still_shown_from_the_database(clients, settings):
    from tinywindow.redis_client import reset_redis_client

    kill_switch_engage(mode="HALT_ONLY", reason="stop", actor="a", source="s")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    reset_redis_client()
    assert "KILL SWITCH ACTIVE (HALT_ONLY)" in banner(clients["viewer"].get("/admin/"))


def test_banner_when_logged_out_then_absent_from_login_page():
    page = Client().get("/admin/login/")
    assert page.status_code == 200 and "tw-desk-banner" not in page.content.decode()


# --- the kill-switch page ---------------------------------------------------------------------------


def _activate(client: Client, *, confirm: bool, mode: str = "HALT_ONLY", reason: str = "Emergency stop"):
    data = {"action": "activate", "activate-mode": mode, "activate-reason": reason}
    return client.post(KS_PAGE, {**data, "confirm": "yes"} if confirm else data)


def test_kill_switch_page_when_operator_activates_then_confirmation_first_then_active(clients):
    page = clients["operator"].get(KS_PAGE)
    assert page.status_code == 200 and 'id="tw-ks-activate"' in page.content.decode()
    confirm = _activate(clients["operator"], confirm=False, mode="CLOSE_POSITIONS")
    html = confirm.content.decode()
    assert confirm.status_code == 200 and "Confirm activation" in html and "flattened" in html
    assert not KillSwitchEvent.objects.exists() and not kill_switch_read_db().active  # not yet
    done = _activate(clients["operator"], confirm=True, mode="CLOSE_POSITIONS")
    assert done.status_code == 302 and done["Location"] == KS_PAGE
    state = kill_switch_read_db()
    assert state.active and state.mode == "CLOSE_POSITIONS" and state.reason == "Emergency stop"
    event = KillSwitchEvent.objects.get()
    assert (event.action, event.actor, event.source) == ("activate", "operator-user", "127.0.0.1")
    assert AuditEvent.objects.filter(action="kill_switch.activate", actor="operator-user").exists()
    after = clients["operator"].get(KS_PAGE).content.decode()
    assert "Only an admin can deactivate" in after and "Emergency stop" in after


@pytest.mark.parametrize(("mode", "reason", "error"), [
    ("HALT_ONLY", "  ", "This field is required."), ("PANIC", "x", "Select a valid choice"),
    ("HALT_ONLY", "x" * 1001, "at most 1000 characters"),
])
def test_kill_switch_page_when_input_bad_then_error_shown_and_nothing_written(clients, mode, reason, error):
    for confirm in (False, True):
        response = _activate(clients["operator"], confirm=confirm, mode=mode, reason=reason)
        assert response.status_code == 200 and error in response.content.decode()
    assert not KillSwitchEvent.objects.exists() and not kill_switch_read_db().active


def test_kill_switch_page_when_viewer_then_read_only_and_post_refused(clients):
    page = clients["viewer"].get(KS_PAGE).content.decode()
    assert "Your role cannot activate" in page and 'id="tw-ks-activate"' not in page
    assert _activate(clients["viewer"], confirm=True).status_code == 403
    assert not KillSwitchEvent.objects.exists() and not kill_switch_read_db().active


def test_kill_switch_page_when_operator_deactivates_then_403_and_when_admin_then_inactive(clients):
    kill_switch_engage(mode="HALT_ONLY", reason="stop", actor="alice", source="test")
    refused = clients["operator"].post(KS_PAGE, {"action": "deactivate", "deactivate-reason": "go",
                                                 "confirm": "yes"})
    assert refused.status_code == 403 and kill_switch_read_db().active
    assert 'id="tw-ks-deactivate"' in clients["admin"].get(KS_PAGE).content.decode()
    confirm = clients["admin"].post(KS_PAGE, {"action": "deactivate", "deactivate-reason": "all clear"})
    assert "Confirm deactivation" in confirm.content.decode() and kill_switch_read_db().active
    done = clients["admin"].post(KS_PAGE, {"action": "deactivate", "deactivate-reason": "all clear",
                                           "confirm": "yes"})
    assert done.status_code == 302 and not kill_switch_read_db().active
    event = KillSwitchEvent.objects.get(action="deactivate")
    assert (event.actor, event.reason) == ("admin-user", "all clear")


# --- breakers, agents, records ------------------------------------------------------------------------


def _reset_breakers(client: Client, reason: str):
    ids = [str(pk) for pk in CircuitBreakerState.objects.values_list("pk", flat=True)]
    return client.post("/admin/safety/circuitbreakerstate/", {"action": "reset_breakers", "_selected_action": ids,
                                                               "confirm": "yes", "reason": reason})


def test_breaker_reset_action_when_viewer_then_unavailable_and_when_operator_then_reset(clients):
    make_agent()
    name = open_stale_data_breaker("BTC/USDT")
    _reset_breakers(clients["viewer"], "viewer tries")
    assert CircuitBreakerState.objects.get(target="BTC/USDT").state == "OPEN"
    assert not CircuitBreakerEvent.objects.filter(action="reset").exists()
    response = _reset_breakers(clients["operator"], "Market conditions stabilized")
    assert response.status_code == 302
    assert CircuitBreakerState.objects.get(target="BTC/USDT").state == "CLOSED"
    event = CircuitBreakerEvent.objects.get(action="reset")
    assert (event.breaker, event.actor) == (name, "operator-user")


def test_breaker_states_page_when_many_agents_then_same_queries_as_for_few(clients, django_assert_max_num_queries):
    """One state per agent for the per-agent breaker: the page must not read each row's config
    on its own (it did: 100 queries for a page at 10,000 agents)."""
    make_agent()
    breakers_check()
    clients["viewer"].get("/admin/safety/circuitbreakerstate/")  # session and caches warm
    with CaptureQueriesContext(connection) as few:
        assert clients["viewer"].get("/admin/safety/circuitbreakerstate/").status_code == 200
    for _ in range(6):
        make_agent()
    breakers_check()
    with django_assert_max_num_queries(len(few)):
        page = clients["viewer"].get("/admin/safety/circuitbreakerstate/")
    assert page.status_code == 200 and page.content.count(b"consecutive_losses:") >= 7


def test_agent_actions_when_operator_pauses_then_paused_and_when_viewer_then_unchanged(clients):
    agent = make_agent()
    clients["viewer"].post("/admin/trading/agent/", {"action": "pause_agents", "_selected_action": [agent.pk]})
    assert Agent.objects.get(pk=agent.pk).status == "active"
    clients["operator"].post("/admin/trading/agent/", {"action": "pause_agents", "_selected_action": [agent.pk]})
    assert Agent.objects.get(pk=agent.pk).status == "paused"
    assert AuditEvent.objects.get(action="agent.pause").actor == "operator-user"


def test_agent_page_when_traded_then_performance_and_schedule_shown(clients, fixed_price_feed):
    book = make_book(fixed_price_feed)
    html = clients["admin"].get(f"/admin/trading/agent/{book['btc'].pk}/change/").content.decode()
    assert "1 closing trades" in html and "win rate 100.0%" in html
    assert f"tick-agent-{book['btc'].pk}" in html and "enabled" in html and "queue strategy" in html
    listing = clients["viewer"].get("/admin/trading/agent/").content.decode()
    assert "PnL (30 d)" in listing and "btc-bot" in listing


def test_records_when_opened_then_filterable_and_read_only(clients, fixed_price_feed):
    make_book(fixed_price_feed)
    for path in ("/admin/trading/order/?status__exact=executed", "/admin/trading/fill/?side__exact=sell",
                 "/admin/safety/killswitchevent/?action__exact=activate", "/admin/safety/auditevent/",
                 "/admin/safety/circuitbreakerevent/"):
        assert clients["viewer"].get(path).status_code == 200, path
    for path in ("/admin/safety/auditevent/add/", "/admin/safety/killswitchevent/add/", "/admin/trading/order/add/"):
        assert clients["admin"].get(path).status_code == 403, path


def test_snapshot_list_when_shown_then_totals_read_and_a_snapshot_page_shows_its_agents(clients):
    """Each snapshot stores a row per agent (3 MB at 12,000 agents): the list reads totals only
    (it read every snapshot's lists: 668 ms for a page with 16 such snapshots, now 52 ms)."""
    from trading.models import PortfolioSnapshot
    from trading.services.snapshots import portfolio_snapshot_take

    make_agent(name="snap-agent")
    portfolio_snapshot_take()
    with CaptureQueriesContext(connection) as queries:
        page = clients["viewer"].get("/admin/trading/portfoliosnapshot/")
    assert page.status_code == 200 and "snap-agent" not in page.content.decode()
    assert not [q["sql"] for q in queries.captured_queries if '"portfolio_snapshots"."agents"' in q["sql"]]
    snapshot = PortfolioSnapshot.objects.get()
    whole = clients["viewer"].get(f"/admin/trading/portfoliosnapshot/{snapshot.pk}/change/")
    assert whole.status_code == 200 and "snap-agent" in whole.content.decode()
