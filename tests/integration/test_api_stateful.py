"""Schemathesis in stateful mode (issue 9, "Security" 1): sequences of calls chained through the
links it infers from /api/schema/ (create an agent, then change, pause or delete that agent; ...),
through the WSGI app as an admin with a token. No answer may be a 500 or an undocumented status.

Bounded for CI: a handful of scenarios of a few steps each, deterministic. More with
STATEFUL_EXAMPLES=200 (and STATEFUL_STEPS) for a longer local run.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.desk import make_book, make_role_users
from tests.integration.test_api_schema import wsgi_keeps_test_connection  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(), config=SchemathesisConfig.from_dict(
    {"generation": {"mode": "all", "deterministic": True, "database": "none"}}))


def test_api_when_driven_statefully_then_no_server_error_and_every_status_documented(
        fixed_price_feed, wsgi_keeps_test_connection):  # noqa: F811 - the fixture above
    token = Token.objects.create(user=make_role_users()["admin"]).key
    make_book(fixed_price_feed)
    calls: list[tuple[str, int]] = []

    class Machine(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": {"Authorization": f"Token {token}"}}

        def after_call(self, response, case):
            super().after_call(response, case)
            calls.append((f"{case.method} {case.path}", response.status_code))

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance],
                                   transport_kwargs=kwargs or None)

    assert Machine.bundles, "no links inferred from the schema: nothing to chain"
    Machine.run(settings=settings(max_examples=int(os.environ.get("STATEFUL_EXAMPLES", "8")),
                                  stateful_step_count=int(os.environ.get("STATEFUL_STEPS", "6")),
                                  deadline=None, derandomize=True, database=None,
                                  suppress_health_check=list(HealthCheck)))
    chained = {call for call, _ in calls if "{" in call}
    assert calls and chained, calls  # it did call, and reached operations on objects it found
