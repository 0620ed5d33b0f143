"""The OpenAPI description: valid without a warning, served with Swagger UI offline, and true:
schemathesis sends generated requests to every operation (through the WSGI app, as an admin with
a token, over a small trading history) and every answer must be documented and conform: no 500,
a documented status code, content type, headers and body."""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.desk import make_book, make_role_users

pytestmark = pytest.mark.django_db

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# Small and repeatable: the schema's examples, its boundary and invalid cases (coverage phase:
# missing fields, wrong types, limits), then 10 generated requests per operation. Invalid or
# unknown values must get a documented 400, never a 500.
CONFIG = {
    "generation": {"mode": "all", "max-examples": 10, "deterministic": True, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
}


# Loaded at collection through the WSGI app (no database needed to describe the API). A lazy
# `schemathesis.pytest.from_fixture` schema would be nicer, but schemathesis 4.32 reads a pytest
# node attribute that pytest 9.2 no longer has.
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(),
                                        config=SchemathesisConfig.from_dict(CONFIG))


@pytest.fixture
def desk(django_user_model, fixed_price_feed) -> dict[str, object]:
    """Users of every role, a small trading history, and the admin's API token."""
    users = make_role_users()
    book = make_book(fixed_price_feed)
    return {"token": Token.objects.create(user=users["admin"]).key, "agent": book["btc"].pk,
            "order": book["sell"].pk}


@pytest.fixture
def wsgi_keeps_test_connection():
    # Django's test client stops each request from closing the test's connection (its
    # transaction); schemathesis calls the WSGI app directly, so do the same here.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@schema.parametrize()
# The fixtures' rows are meant to persist across the generated requests (an API under traffic).
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_when_fuzzed_then_every_answer_documented_and_conforming(case, desk, wsgi_keeps_test_connection):
    # Generated ids rarely exist: point {id} at a real agent or order so the handlers run for real
    # (the agent has orders, so a generated DELETE is refused and it stays for the next request).
    if "id" in (case.path_parameters or {}):
        case.path_parameters["id"] = desk["order"] if case.path.startswith("/api/orders/") else desk["agent"]
    case.call_and_validate(headers={"Authorization": f"Token {desk['token']}"}, checks=CHECKS)


def test_schema_when_generated_then_valid_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    text = (tmp_path / "schema.yml").read_text()
    for path in ("/api/agents/{id}/pause/", "/api/orders/", "/api/status/", "/api/kill-switch/",
                 "/api/circuit-breakers/reset/", "/api/portfolio-snapshots/", "/api/agent-performance/"):
        assert f"  {path}:" in text, path


def test_docs_when_opened_then_swagger_ui_from_our_own_static_files():
    client = Client()
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html and "/api/schema/" in html
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html  # nothing from the internet
    assert client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").status_code == 200
