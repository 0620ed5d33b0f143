import time

import pytest
from django.test import Client

from tinywindow.redis_client import ENGINE_HEARTBEAT_KEY

pytestmark = pytest.mark.django_db


def test_health_when_engine_heartbeat_present_then_200_with_every_check(redis_client):
    redis_client.set(ENGINE_HEARTBEAT_KEY, str(time.time()), ex=20)
    response = Client().get("/health")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "broker", "engine", "kill_switch", "circuit_breakers"}


def test_health_when_engine_silent_then_503_naming_the_engine():
    response = Client().get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["engine"]["ok"] is False


def test_health_when_kill_switch_active_then_still_healthy_and_reported(redis_client):
    from safety.services.kill_switch import kill_switch_engage

    redis_client.set(ENGINE_HEARTBEAT_KEY, str(time.time()), ex=20)
    kill_switch_engage(mode="HALT_ONLY", reason="r", actor="a", source="s")
    body = Client().get("/health").json()
    assert body["status"] == "ok" and body["checks"]["kill_switch"]["active"] is True


def test_metrics_when_scraped_then_prometheus_text_with_tinywindow_metrics():
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert b"tinywindow_orders_total" in response.content or b"# HELP tinywindow_" in response.content
