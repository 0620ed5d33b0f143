"""The execute_order task's retry schedule: bounded, spread out, never sooner than Retry-After."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinywindow.exceptions import TemporaryExchangeError
from tinywindow.faults import CRASH_POINT_ENV, crash_point
from trading.tasks import EXECUTE_BACKOFF_MAX_SECONDS, EXECUTE_MAX_RETRIES, execute_order, retry_countdown


@given(retries=st.integers(min_value=0, max_value=20))
def test_countdown_when_no_retry_after_then_between_half_and_full_backoff(retries):
    backoff = min(EXECUTE_BACKOFF_MAX_SECONDS, 2 ** retries)
    assert backoff / 2 <= retry_countdown(retries, TemporaryExchangeError("503")) <= backoff


@given(retries=st.integers(min_value=0, max_value=EXECUTE_MAX_RETRIES), retry_after=st.floats(0, 120))
def test_countdown_when_venue_sends_retry_after_then_never_sooner(retries, retry_after):
    assert retry_countdown(retries, TemporaryExchangeError("429", retry_after=retry_after)) >= retry_after


def test_retries_when_all_used_then_they_cover_at_least_15_seconds_and_stop():
    assert execute_order.max_retries == EXECUTE_MAX_RETRIES == 5
    shortest = sum(min(EXECUTE_BACKOFF_MAX_SECONDS, 2 ** r) / 2 for r in range(EXECUTE_MAX_RETRIES))
    assert shortest >= 15  # a venue or database outage of 15 s never costs an order its retries


def test_crash_point_when_not_configured_or_other_step_then_returns(monkeypatch):
    monkeypatch.delenv(CRASH_POINT_ENV, raising=False)
    crash_point("order.before_send", key="tw-1-x")
    monkeypatch.setenv(CRASH_POINT_ENV, "order.after_send")
    monkeypatch.setenv("TINYWINDOW_CRASH_KEY", "tw-2-y")
    crash_point("order.before_send", key="tw-2-y")  # another step
    crash_point("order.after_send", key="tw-1-x")  # another order


@pytest.mark.parametrize("headers, expected", [({"Retry-After": "3"}, 3.0), ({"retry-after": "0.5"}, 0.5),
                                               ({}, None), ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None)])
def test_gateway_retry_after_when_headers_given_then_seconds_or_none(headers, expected):
    from trading.gateways.ccxt import CcxtGateway

    gateway = CcxtGateway("binance", credentials=None, api_url="http://127.0.0.1:9")
    gateway._client.last_response_headers = headers
    assert gateway._retry_after() == expected
