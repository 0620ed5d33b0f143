"""Kill switch: state in PostgreSQL and Redis, events, fail-closed reads, the runbook's HTTP calls."""

import pytest
import redis
from django.test import Client

from safety.models import AuditEvent, KillSwitchEvent
from safety.services import kill_switch as ks
from tinywindow.exceptions import SafetyStateUnknown, ValidationError
from tinywindow.redis_client import KILL_SWITCH_ACTIVE_KEY

pytestmark = pytest.mark.django_db


def _client(addr: str = "127.0.0.1") -> Client:
    return Client(REMOTE_ADDR=addr)


def test_engage_when_called_then_db_redis_event_and_audit_hold_it(redis_client):
    ks.kill_switch_engage(mode="HALT_ONLY", reason="Emergency stop", actor="alice", source="10.0.0.1")
    assert ks.kill_switch_read_db().active
    assert redis_client.get(KILL_SWITCH_ACTIVE_KEY) == "true"
    event = KillSwitchEvent.objects.get()
    assert (event.action, event.mode, event.reason, event.actor, event.source) == (
        "activate", "HALT_ONLY", "Emergency stop", "alice", "10.0.0.1")
    assert AuditEvent.objects.filter(action="kill_switch.activate", actor="alice").exists()


def test_engage_when_reason_blank_or_mode_unknown_then_validation_error_and_nothing_written():
    with pytest.raises(ValidationError) as info:
        ks.kill_switch_engage(mode="HALT_ONLY", reason="  ", actor="a", source="s")
    assert info.value.field == "reason"
    with pytest.raises(ValidationError) as info:
        ks.kill_switch_engage(mode="PANIC", reason="x", actor="a", source="s")
    assert info.value.field == "mode"
    assert not KillSwitchEvent.objects.exists()
    assert not ks.kill_switch_read_db().active


def test_state_when_redis_flushed_then_read_from_db_and_mirror_restored(redis_client):
    ks.kill_switch_engage(mode="CLOSE_POSITIONS", reason="crash", actor="a", source="s")
    redis_client.flushdb()
    view = ks.kill_switch_state()
    assert view.active and view.mode == "CLOSE_POSITIONS" and view.source_of_truth == "database"
    assert redis_client.get(KILL_SWITCH_ACTIVE_KEY) == "true"


def test_state_when_redis_unreachable_then_database_answers(settings):
    ks.kill_switch_engage(mode="HALT_ONLY", reason="r", actor="a", source="s")
    from tinywindow.redis_client import reset_redis_client

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    reset_redis_client()
    view = ks.kill_switch_state()
    assert view.active and view.source_of_truth == "database"


def test_state_when_redis_and_database_unreachable_then_refuses(settings, monkeypatch):
    from django.db import DatabaseError

    from tinywindow.redis_client import reset_redis_client

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    reset_redis_client()

    def broken():
        raise DatabaseError("database down")

    monkeypatch.setattr(ks, "kill_switch_read_db", broken)
    with pytest.raises(SafetyStateUnknown):
        ks.kill_switch_state()


def test_runbook_post_when_from_loopback_without_credentials_then_active(redis_client):
    response = _client().post("/api/kill-switch", {"mode": "HALT_ONLY", "reason": "Emergency stop"},
                              content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["active"] is True
    assert redis_client.get(KILL_SWITCH_ACTIVE_KEY) == "true"
    assert KillSwitchEvent.objects.get().source == "127.0.0.1"


def test_runbook_delete_when_from_loopback_in_paper_mode_then_inactive(redis_client):
    ks.kill_switch_engage(mode="HALT_ONLY", reason="r", actor="a", source="s")
    response = _client().delete("/api/kill-switch")
    assert response.status_code == 200
    assert redis_client.get(KILL_SWITCH_ACTIVE_KEY) == "false"
    assert list(KillSwitchEvent.objects.order_by("id").values_list("action", flat=True)) == ["activate", "deactivate"]


def test_post_when_reason_missing_then_400_with_field_message_and_nothing_written():
    response = _client().post("/api/kill-switch", {"mode": "HALT_ONLY"}, content_type="application/json")
    assert response.status_code == 400
    assert "reason" in response.json()
    response = _client().post("/api/kill-switch", {"mode": "NOPE", "reason": "x"}, content_type="application/json")
    assert response.status_code == 400 and "mode" in response.json()
    response = _client().post("/api/kill-switch", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert not KillSwitchEvent.objects.exists()


def test_writes_when_remote_and_anonymous_then_refused_and_nothing_written():
    remote = _client("203.0.113.9")
    assert remote.post("/api/kill-switch", {"mode": "HALT_ONLY", "reason": "x"},
                       content_type="application/json").status_code in (401, 403)
    assert remote.delete("/api/kill-switch").status_code in (401, 403)
    assert not KillSwitchEvent.objects.exists()


def test_delete_when_loopback_in_live_mode_then_refused(settings):
    settings.ALLOW_LOOPBACK_WRITES = False
    ks.kill_switch_engage(mode="HALT_ONLY", reason="r", actor="a", source="s")
    assert _client().delete("/api/kill-switch").status_code in (401, 403)
    assert ks.kill_switch_read_db().active
    # Activation from loopback stays allowed whatever the mode: it only makes things safer.
    assert _client().post("/api/kill-switch", {"mode": "HALT_ONLY", "reason": "again"},
                          content_type="application/json").status_code == 200


def test_delete_when_operator_then_403_and_when_admin_then_200(django_user_model):
    from django.contrib.auth.models import Group

    from tinywindow.bootstrap import bootstrap

    bootstrap(demo_agents=False)
    operator = django_user_model.objects.create_user("op", password="pw-123456")
    operator.groups.add(Group.objects.get(name="operator"))
    admin = django_user_model.objects.create_user("boss", password="pw-123456")
    admin.groups.add(Group.objects.get(name="admin"))
    ks.kill_switch_engage(mode="HALT_ONLY", reason="r", actor="a", source="s")
    remote = _client("203.0.113.9")
    remote.force_login(operator)
    assert remote.delete("/api/kill-switch").status_code == 403
    remote.force_login(admin)
    assert remote.delete("/api/kill-switch").status_code == 200
    assert KillSwitchEvent.objects.filter(action="deactivate", actor="boss").exists()


def test_get_when_viewer_then_state_returned(django_user_model):
    from django.contrib.auth.models import Group

    from tinywindow.bootstrap import bootstrap

    bootstrap(demo_agents=False)
    viewer = django_user_model.objects.create_user("v", password="pw-123456")
    viewer.groups.add(Group.objects.get(name="viewer"))
    remote = _client("203.0.113.9")
    assert remote.get("/api/kill-switch").status_code in (401, 403)
    remote.force_login(viewer)
    response = remote.get("/api/kill-switch")
    assert response.status_code == 200 and response.json()["active"] is False


def test_redis_client_when_server_gone_then_error_is_redis_error(settings):
    from tinywindow.redis_client import get_redis, reset_redis_client

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    reset_redis_client()
    with pytest.raises(redis.RedisError):
        get_redis().ping()
