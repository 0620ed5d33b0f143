"""Roles on every safety endpoint (from a remote address, so no loopback exception applies),
and nothing written when a request is refused."""

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from safety.models import AuditEvent, CircuitBreakerEvent, CircuitBreakerState, KillSwitchEvent, RiskLimit
from safety.services.breakers import breakers_check
from safety.services.kill_switch import kill_switch_engage
from tests.desk import open_stale_data_breaker
from tests.factories import make_agent
from tinywindow.bootstrap import bootstrap

pytestmark = pytest.mark.django_db
REMOTE = "203.0.113.7"

WRITES = {
    "activate": ("post", "/api/kill-switch", {"mode": "HALT_ONLY", "reason": "role test"}),
    "deactivate": ("delete", "/api/kill-switch", {}),
    "reset": ("post", "/api/circuit-breakers/reset", {"reason": "role test"}),
    "limits": ("post", "/api/risk-limits/", {"agent": None, "max_order_notional": "1000"}),
}
# Who may do what (DESIGN.md "Security").
ALLOWED = {
    "anonymous": set(),
    "viewer": set(),
    "operator": {"activate", "reset"},
    "admin": {"activate", "deactivate", "reset", "limits"},
}


@pytest.fixture
def clients(django_user_model):
    bootstrap(demo_agents=False)
    made = {"anonymous": Client(REMOTE_ADDR=REMOTE)}
    for role in ("viewer", "operator", "admin"):
        user = django_user_model.objects.create_user(f"{role}-user", password="pw-123456789")
        user.groups.add(Group.objects.get(name=role))
        client = Client(REMOTE_ADDR=REMOTE)
        client.force_login(user)
        made[role] = client
    return made


def _written() -> tuple[int, int, int]:
    return (KillSwitchEvent.objects.count(), CircuitBreakerEvent.objects.count(),
            AuditEvent.objects.exclude(action__in=["kill_switch.activate"]).count())


@pytest.mark.parametrize("role", list(ALLOWED))
@pytest.mark.parametrize("action", list(WRITES))
def test_write_when_role_lacks_permission_then_refused_and_nothing_written(clients, role, action):
    if action == "deactivate":
        kill_switch_engage(mode="HALT_ONLY", reason="setup", actor="setup", source="test")
    before = _written()
    limits_before = list(RiskLimit.objects.values())
    method, path, body = WRITES[action]
    response = getattr(clients[role], method)(path, body, content_type="application/json")
    if action in ALLOWED[role]:
        assert response.status_code == 200, response.content
    else:
        assert response.status_code in (401, 403), response.content
        assert _written() == before
        assert list(RiskLimit.objects.values()) == limits_before


@pytest.mark.parametrize("path", ["/api/kill-switch", "/api/kill-switch/events/", "/api/circuit-breakers/",
                                  "/api/circuit-breakers/events/", "/api/risk-limits/", "/api/audit/"])
def test_read_when_viewer_then_200_and_when_anonymous_remote_then_refused(clients, path):
    assert clients["viewer"].get(path).status_code == 200
    assert clients["anonymous"].get(path).status_code in (401, 403)


def test_reset_when_reason_missing_then_400_with_field_message(clients):
    response = clients["operator"].post("/api/circuit-breakers/reset", {}, content_type="application/json")
    assert response.status_code == 400 and "reason" in response.json()


def test_risk_limits_when_negative_then_400_and_nothing_written(clients):
    before = list(RiskLimit.objects.values())
    response = clients["admin"].post("/api/risk-limits/", {"agent": None, "max_order_notional": "-5"},
                                     content_type="application/json")
    assert response.status_code == 400 and "max_order_notional" in response.json()
    assert list(RiskLimit.objects.values()) == before


def test_risk_limits_when_admin_sets_global_then_replaced_and_audited(clients):
    response = clients["admin"].post("/api/risk-limits/", {"agent": None, "max_order_notional": "1234"},
                                     content_type="application/json")
    assert response.status_code == 200
    assert RiskLimit.objects.filter(agent__isnull=True).count() == 1
    assert RiskLimit.objects.get(agent__isnull=True).max_order_notional == 1234
    assert AuditEvent.objects.filter(action="risk_limit.set", actor="admin-user").exists()


def test_breakers_when_listed_then_a_page_at_a_time_filtered_by_state_and_breaker(clients):
    """GET /api/circuit-breakers/ answered every state at once (one per agent for the per-agent
    breaker: tens of thousands at scale); it is paginated as the other lists, with filters."""
    agents = [make_agent(name=f"breaker-page-{n}") for n in range(3)]
    breakers_check()
    opened = open_stale_data_breaker("BTC/USDT")
    total = CircuitBreakerState.objects.count()
    get = clients["viewer"].get

    walked, page = [], get("/api/circuit-breakers/?limit=2").json()
    assert page["count"] == total > 3 and len(page["results"]) == 2
    while True:
        walked += [row["name"] for row in page["results"]]
        if page["next"] is None:
            break
        page = get(page["next"]).json()
    assert len(walked) == len(set(walked)) == total  # each state once, by breaker name then target

    open_now = get("/api/circuit-breakers/?state=OPEN").json()
    assert [row["name"] for row in open_now["results"]] == [opened] and open_now["results"][0]["state"] == "OPEN"
    per_agent = get("/api/circuit-breakers/?breaker=consecutive_losses").json()["results"]
    assert sorted(row["target"] for row in per_agent) == sorted(str(a.pk) for a in agents)
    for query, field in (("state=BROKEN", "state"), ("limit=0", "limit"), ("breaker=" + "x" * 65, "breaker")):
        response = get(f"/api/circuit-breakers/?{query}")
        assert response.status_code == 400 and field in response.json(), response.content
