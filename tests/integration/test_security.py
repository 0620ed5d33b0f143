"""Who gets in (issue 9, "Security" 2): the role matrix over EVERY endpoint the URL resolver knows
(a new endpoint without an entry here fails), the loopback rules of DESIGN.md "Security",
brute-force protection of the admin login, cookie and header settings for production — checked
over real HTTP against gunicorn — and `manage.py check --deploy` clean with a production env.
"""

from __future__ import annotations

import http.client
import http.cookies
import json
import re
import secrets
import sys
import urllib.parse
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from tests.desk import PASSWORD, REMOTE, db_fingerprint, make_role_users
from tests.factories import make_agent
from tests.helpers import BackgroundProcess, manage, wait_until
from tinywindow.embedded import find_free_port
from trading.services.orders import order_create

PUBLIC, VIEWER, OPERATOR, ADMIN = "public", "viewer", "operator", "admin"
ROLE_RANK = {VIEWER: 1, OPERATOR: 2, ADMIN: 3}

# Every route by URL name and method → the least role that may call it (DESIGN.md "Security").
# `public`: anyone (health probes, Prometheus, the API's description).
MATRIX = {
    ("health", "GET"): PUBLIC, ("health/", "GET"): PUBLIC, ("metrics", "GET"): PUBLIC,
    ("schema", "GET"): PUBLIC, ("docs", "GET"): PUBLIC,
    ("api-root", "GET"): VIEWER, ("status", "GET"): VIEWER,
    ("agents", "GET"): VIEWER, ("agents", "POST"): ADMIN,
    ("agent", "GET"): VIEWER, ("agent", "PATCH"): ADMIN, ("agent", "DELETE"): ADMIN,
    ("agent-pause", "POST"): OPERATOR, ("agent-resume", "POST"): OPERATOR, ("agent-stop", "POST"): OPERATOR,
    ("orders", "GET"): VIEWER, ("order", "GET"): VIEWER, ("fills", "GET"): VIEWER,
    ("positions", "GET"): VIEWER, ("portfolio-snapshots", "GET"): VIEWER, ("agent-performance", "GET"): VIEWER,
    ("portfolio-snapshot", "GET"): VIEWER, ("portfolio-snapshot-latest", "GET"): VIEWER,
    ("kill-switch", "GET"): VIEWER, ("kill-switch", "POST"): OPERATOR, ("kill-switch", "DELETE"): ADMIN,
    ("kill-switch-events", "GET"): VIEWER,
    ("circuit-breakers", "GET"): VIEWER, ("circuit-breakers-reset", "POST"): OPERATOR,
    ("circuit-breaker-events", "GET"): VIEWER,
    ("risk-limits", "GET"): VIEWER, ("risk-limits", "POST"): ADMIN,
    ("audit", "GET"): VIEWER,
}
# Bodies that a permitted caller's request would pass validation with.
BODIES = {
    ("agents", "POST"): {"name": "matrix-new", "strategy": "trading.strategies.sma_cross.SmaCross",
                         "symbols": ["ETH/USDT"], "capital": "1000"},
    ("agent", "PATCH"): {"tick_seconds": 30},
    ("kill-switch", "POST"): {"mode": "HALT_ONLY", "reason": "matrix"},
    ("circuit-breakers-reset", "POST"): {"reason": "matrix"},
    ("risk-limits", "POST"): {"agent": None, "max_order_notional": "1234"},
}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def routes() -> dict[tuple[str, str], str]:
    """{(url name, method): route} for every view of the project except the admin's (tested apart)."""
    found: dict[tuple[str, str], str] = {}

    def walk(patterns, prefix: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if getattr(entry, "app_name", None) == "admin":
                    continue
                walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                view = getattr(entry.callback, "view_class", None) or getattr(entry.callback, "cls", None)
                methods = [m for m in METHODS if view is None and m == "GET"
                           or view is not None and hasattr(view, m.lower())]
                for method in methods:
                    found.setdefault((entry.name or str(entry.pattern), method), prefix + str(entry.pattern))

    walk(get_resolver().url_patterns, "")
    return found


def _path(name: str, ids: dict[str, int]) -> str:
    route = routes()[next(k for k in routes() if k[0] == name)]
    path = "/" + route.replace("^", "").replace("/?$", "").replace("$", "")
    path = re.sub(r"\(\?P<pk>\[0-9\]\+\)|<int:pk>", str(ids["order"] if name == "order" else ids["agent"]), path)
    return path


def test_matrix_when_compared_with_the_url_resolver_then_every_endpoint_has_an_entry():
    # A new endpoint (or a new method on one) must say who may call it, here, before it ships.
    assert set(routes()) == set(MATRIX), {"missing here": set(routes()) - set(MATRIX),
                                          "gone": set(MATRIX) - set(routes())}


@pytest.fixture
def desk(db, django_user_model):
    users = make_role_users()
    agent = make_agent(name="matrix-agent")
    order = order_create(agent=agent, symbol="BTC/USDT", side="buy", quantity=Decimal("0.01"),
                         enqueue=False)
    return {"users": users, "ids": {"agent": agent.pk, "order": order.pk}}


def _client(desk, principal: str, address: str) -> Client:
    client = Client(REMOTE_ADDR=address)
    if principal != "anonymous":
        client.force_login(desk["users"][principal])
    return client


def _allowed(principal: str, needed: str, *, loopback: bool, loopback_writes: bool, method: str, name: str) -> bool:
    if needed == PUBLIC:
        return True
    if loopback and name == "kill-switch" and method == "POST":
        return True  # activation from loopback: always, for anyone (it only makes the system safer)
    if principal != "anonymous":
        return ROLE_RANK[principal] >= ROLE_RANK[needed]
    return loopback and loopback_writes  # paper mode's loopback convenience


PRINCIPALS = [("anonymous", REMOTE, True), ("viewer", REMOTE, True), ("operator", REMOTE, True),
              ("admin", REMOTE, True), ("anonymous", "127.0.0.1", True), ("anonymous", "127.0.0.1", False),
              ("viewer", "127.0.0.1", False)]


@pytest.mark.django_db
@pytest.mark.parametrize(("principal", "address", "loopback_writes"), PRINCIPALS,
                         ids=[f"{p}@{a}-loopback_writes={w}" for p, a, w in PRINCIPALS])
def test_every_endpoint_when_called_by_each_principal_then_matrix_holds_and_refusals_write_nothing(
        desk, settings, principal, address, loopback_writes):
    settings.ALLOW_LOOPBACK_WRITES = loopback_writes
    client = _client(desk, principal, address)
    problems = []
    for (name, method), needed in sorted(MATRIX.items(), key=lambda item: item[0][1] == "DELETE"):
        path = _path(name, desk["ids"])
        before = db_fingerprint()
        response = client.generic(method, path, json.dumps(BODIES.get((name, method), {})),
                                  content_type="application/json")
        allowed = _allowed(principal, needed, loopback=address == "127.0.0.1", loopback_writes=loopback_writes,
                           method=method, name=name)
        if allowed and response.status_code in (401, 403):
            problems.append(f"{method} {path}: refused ({response.status_code}) but {needed} suffices")
        if not allowed:
            if response.status_code not in (401, 403):
                problems.append(f"{method} {path}: {response.status_code}, should be refused (needs {needed})")
            elif db_fingerprint() != before:
                problems.append(f"{method} {path}: refused but something was written")
        if allowed and response.status_code >= 500 and name not in ("health", "health/"):  # 503: no engine here
            problems.append(f"{method} {path}: {response.status_code}")
    assert not problems, "\n".join(problems)


# --- the admin login: brute force --------------------------------------------------------------


@pytest.mark.django_db
def test_admin_login_when_password_guessed_repeatedly_then_locked_out_for_that_address_only(desk, settings):
    from axes.models import AccessAttempt

    attacker = Client(REMOTE_ADDR="198.51.100.9", enforce_csrf_checks=False)
    for attempt in range(1, settings.AXES_FAILURE_LIMIT + 1):
        page = attacker.post("/admin/login/?next=/admin/", {"username": "operator-user", "password": "guess"})
        # the form again, with an error; the last allowed failure locks the pair out
        assert page.status_code == (429 if attempt == settings.AXES_FAILURE_LIMIT else 200)
    locked = attacker.post("/admin/login/?next=/admin/", {"username": "operator-user", "password": PASSWORD})
    assert locked.status_code == 429  # even the right password, from there
    assert "_auth_user_id" not in attacker.session
    assert AccessAttempt.objects.filter(username="operator-user", ip_address="198.51.100.9").exists()
    # The operator at the desk is not locked out by someone else's guessing.
    desk_client = Client(REMOTE_ADDR="203.0.113.50")
    ok = desk_client.post("/admin/login/?next=/admin/", {"username": "operator-user", "password": PASSWORD})
    assert ok.status_code == 302 and desk_client.session.get("_auth_user_id")


# --- production settings, over real HTTP -------------------------------------------------------


def production_env(worker_env: dict[str, str]) -> dict[str, str]:
    return {**worker_env, "PAPER_TRADING_MODE": "false", "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "tw.example.com,127.0.0.1", "TRUST_X_FORWARDED_PROTO": "true",
            "CSRF_TRUSTED_ORIGINS": "https://tw.example.com", "DEBUG": "false"}


def test_check_deploy_when_production_env_then_no_issues(worker_env):
    run = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(worker_env))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no issues" in run.stdout


@pytest.mark.parametrize(("changes", "message"), [
    ({"DEBUG": "true"}, "DEBUG=true is refused when PAPER_TRADING_MODE=false"),
    ({"SECRET_KEY": ""}, "SECRET_KEY is required when PAPER_TRADING_MODE=false"),
])
def test_live_settings_when_debug_or_no_secret_key_then_refused_to_start(worker_env, changes, message):
    run = manage("check", env={**production_env(worker_env), **changes})
    assert run.returncode != 0 and message in run.stderr and "Traceback" not in run.stderr


def test_debug_when_not_asked_then_off(worker_env):
    env = {k: v for k, v in worker_env.items() if k != "DEBUG"}
    run = manage("shell", "-c", "from django.conf import settings; print('DEBUG', settings.DEBUG)", env=env)
    assert run.returncode == 0 and "DEBUG False" in run.stdout, run.stderr


def _request(port: int, method: str, path: str, *, headers: dict[str, str] | None = None,
             body: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request(method, path, body=body, headers={"Host": "tw.example.com", **(headers or {})})
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def _cookies(response: http.client.HTTPResponse) -> dict[str, http.cookies.Morsel]:
    jar = http.cookies.SimpleCookie()
    for header in response.headers.get_all("Set-Cookie") or []:
        jar.load(header)
    return dict(jar)


@pytest.mark.django_db(transaction=True)
def test_gunicorn_when_production_env_then_secure_headers_cookies_and_https_redirect(worker_env, tmp_path):
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    admin = make_role_users()["admin"]
    # The tests hash with MD5 for speed; gunicorn runs the production hashers.
    admin.password = PBKDF2PasswordHasher().encode(PASSWORD, secrets.token_hex(8), iterations=1000)
    admin.save(update_fields=["password"])
    port = find_free_port()
    web = BackgroundProcess([sys.executable, "-m", "gunicorn", "tinywindow.wsgi", "-b", f"127.0.0.1:{port}",
                             "-w", "1"], env=production_env(worker_env), log_path=tmp_path / "web.log")
    https = {"X-Forwarded-Proto": "https"}  # what the TLS proxy in front says
    try:
        wait_until(lambda: _request(port, "GET", "/admin/login/", headers=https).status == 200, timeout=60,
                   message=f"gunicorn up ({web.log_path})")
        # Plain HTTP is sent to HTTPS, except the probes.
        plain = _request(port, "GET", "/admin/login/")
        assert plain.status == 301 and plain.headers["Location"].startswith("https://tw.example.com/")
        assert _request(port, "GET", "/metrics").status == 200

        login = _request(port, "GET", "/admin/login/", headers=https)
        assert login.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
        assert login.headers["X-Frame-Options"] == "DENY"
        assert login.headers["X-Content-Type-Options"] == "nosniff"
        assert login.headers["Referrer-Policy"] == "same-origin"
        assert login.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        csrf = _cookies(login)["csrftoken"]
        assert csrf["secure"] and csrf["samesite"] == "Lax"
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', login.body).group(1).decode()
        form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": "admin-user",
                                       "password": PASSWORD, "next": "/admin/"})
        logged_in = _request(port, "POST", "/admin/login/", body=form, headers={
            **https, "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={csrf.value}",
            "Referer": "https://tw.example.com/admin/login/", "Origin": "https://tw.example.com"})
        assert logged_in.status == 302, logged_in.body[:300]
        session = _cookies(logged_in)["sessionid"]
        assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"
        assert int(session["max-age"]) == 8 * 3600
        api = _request(port, "GET", "/api/status", headers={**https, "Cookie": f"sessionid={session.value}"})
        assert api.status == 200 and api.headers["X-Content-Type-Options"] == "nosniff"
        assert api.headers["X-Frame-Options"] == "DENY"
        # An error page gives nothing away.
        missing = _request(port, "GET", "/admin/nope-" + secrets.token_hex(4), headers=https)
        assert missing.status in (302, 404) and b"Traceback" not in missing.body and b"SECRET_KEY" not in missing.body
    finally:
        web.stop()
