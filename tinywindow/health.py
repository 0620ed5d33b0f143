"""Health checks shared by the web (:8000/health) and the engine (:8080/health).

Each check answers {"ok": bool, ...details}; the overall status is "ok" (HTTP 200) only when
every check is ok, else "degraded" (HTTP 503). An active kill switch is not unhealthy: it is
reported, and the system is doing what it was told.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from django.conf import settings
from django.db import close_old_connections, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from tinywindow.redis_client import BREAKER_STATUS_KEY, ENGINE_HEARTBEAT_KEY, get_redis

logger = logging.getLogger(__name__)

Check = Callable[[], dict[str, Any]]


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True}


def check_redis() -> dict[str, Any]:
    return {"ok": bool(get_redis().ping())}


def check_broker() -> dict[str, Any]:
    from tinywindow.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return {"ok": True, "transport": conn.transport_cls if isinstance(conn.transport_cls, str) else "redis"}


def check_engine() -> dict[str, Any]:
    beat = get_redis().get(ENGINE_HEARTBEAT_KEY)
    if beat is None:
        return {"ok": False, "error": "no engine heartbeat (is the engine worker running?)"}
    return {"ok": True, "last_heartbeat_age_seconds": round(time.time() - float(beat), 1)}


def check_kill_switch() -> dict[str, Any]:
    from safety.services.kill_switch import kill_switch_state

    view = kill_switch_state()
    return {"ok": True, "active": view.active, "mode": view.mode or None, "source": view.source_of_truth}


def check_breakers() -> dict[str, Any]:
    status = get_redis().get(BREAKER_STATUS_KEY)
    if status is None:  # mirror missing: the database knows
        from safety.services.breakers import aggregate_status, breaker_states

        status = aggregate_status(s.state for s in breaker_states(not_closed=True))
    return {"ok": True, "status": status}


def _guard(check: Check) -> dict[str, Any]:
    try:
        return check()
    except Exception as exc:  # a health check reports failures, it never raises them
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}


def run_checks(checks: dict[str, Check]) -> tuple[int, dict[str, Any]]:
    results = {name: _guard(check) for name, check in checks.items()}
    healthy = all(r["ok"] for r in results.values())
    body = {"status": "ok" if healthy else "degraded", "role": None, "checks": results,
            "mode": "paper" if settings.PAPER_TRADING_MODE else "live"}
    return (200 if healthy else 503), body


WEB_CHECKS: dict[str, Check] = {
    "database": check_database, "redis": check_redis, "broker": check_broker, "engine": check_engine,
    "kill_switch": check_kill_switch, "circuit_breakers": check_breakers,
}


def health_view(request: HttpRequest) -> HttpResponse:
    status, body = run_checks(WEB_CHECKS)
    body["role"] = "web"
    return JsonResponse(body, status=status)


def metrics_view(request: HttpRequest) -> HttpResponse:
    from tinywindow.metrics import render_latest

    payload, content_type = render_latest()
    return HttpResponse(payload, content_type=content_type)


# --- the engine's own server ----------------------------------------------------------------

class _EngineServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], worker_hostname: str, role: str = "engine") -> None:
        super().__init__(address, _EngineHandler)
        self.worker_hostname = worker_hostname
        self.role = role
        self.stopping = threading.Event()

    def shutdown(self) -> None:
        self.stopping.set()
        super().shutdown()
        self.server_close()


class _EngineHandler(BaseHTTPRequestHandler):
    server: _EngineServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            close_old_connections()
            checks = {"database": check_database, "redis": check_redis, "broker": check_broker,
                      "kill_switch": check_kill_switch, "circuit_breakers": check_breakers}
            status, body = run_checks(checks)
            body["role"] = self.server.role
            body["worker"] = self.server.worker_hostname
            self._send(status, json.dumps(body).encode(), "application/json")
        elif path == "/metrics":
            from tinywindow.metrics import render_latest

            close_old_connections()  # the scrape-time collectors read PostgreSQL from this thread
            try:
                payload, content_type = render_latest()
            finally:
                close_old_connections()
            self._send(200, payload, content_type)
        else:
            self._send(404, b'{"error": "not found"}', "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        logger.debug("engine health: " + format, *args)


def _heartbeat_loop(server: _EngineServer) -> None:
    """Every few seconds: tell the web (and anyone else) that the engine is alive, put back the
    Redis mirror of the safety state if it went missing (Redis restart, FLUSHDB), and check the
    circuit breakers itself when beat's periodic check is overdue (beat stopped)."""
    from safety.services.breakers import breakers_check_if_overdue
    from safety.services.mirror import safety_mirror_sync

    interval = max(1, min(5, settings.ENGINE_HEARTBEAT_TTL_SECONDS // 4))
    first = True
    while not server.stopping.is_set():
        try:
            get_redis().set(ENGINE_HEARTBEAT_KEY, str(time.time()), ex=settings.ENGINE_HEARTBEAT_TTL_SECONDS)
        except redis.RedisError as exc:
            logger.warning("engine heartbeat could not reach Redis: %s", exc)
        try:
            close_old_connections()
            safety_mirror_sync(force=first)
            first = False
        except Exception as exc:  # database down: readers fall back and fail closed meanwhile
            logger.warning("safety mirror sync failed: %s", exc)
        try:
            breakers_check_if_overdue(interval_seconds=settings.BREAKER_CHECK_SECONDS)
        except Exception as exc:  # database down: the breakers' readers fail closed meanwhile
            logger.warning("engine breaker check failed: %s", exc)
        server.stopping.wait(interval)


def start_engine_health_server(*, host: str, port: int, worker_hostname: str, engine: bool = True) -> _EngineServer:
    """/health and /metrics for a worker. Only the engine (engine=True: a worker on the safety or
    execution queue) writes the engine heartbeat and keeps the safety mirror: a strategy worker
    with a health port must not make the web believe the engine is up."""
    server = _EngineServer((host, port), worker_hostname, role="engine" if engine else "worker")
    threading.Thread(target=server.serve_forever, name="engine-health", daemon=True).start()
    if engine:
        threading.Thread(target=_heartbeat_loop, args=(server,), name="engine-heartbeat", daemon=True).start()
    logger.info("%s health server on http://%s:%s/health", server.role, host, port)
    return server
