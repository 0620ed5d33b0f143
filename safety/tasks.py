"""Safety tasks on the `safety` queue: enforce the kill switch, evaluate breakers, notify."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from celery import shared_task
from django.conf import settings

from safety.services.breakers import breakers_check, breakers_check_started
from safety.services.enforcement import kill_switch_enforce_now
from safety.services.mirror import safety_mirror_sync

logger = logging.getLogger(__name__)


@shared_task(name="safety.tasks.kill_switch_enforce", ignore_result=True)
def kill_switch_enforce() -> None:
    """Cancel every open order; with CLOSE_POSITIONS also flatten every position."""
    kill_switch_enforce_now()


@shared_task(name="safety.tasks.check_breakers", ignore_result=True)
def check_breakers(kinds: list[str] | None = None, scoped: bool = False) -> None:
    """Evaluate circuit breakers (all every few seconds from beat; some inline after events),
    and restore the Redis mirror of the safety state if it went missing.

    `scoped`: an inline check after fills, which measures the agent-scoped breakers of the
    agents that filled since the last one started (every agent when that set cannot be read)."""
    agent_ids = None
    if kinds is not None:
        agents = breakers_check_started(kinds)  # before measuring: an event from now on queues a new check
        agent_ids = agents if scoped else None
    breakers_check(kinds=kinds, agent_ids=agent_ids)
    if kinds is None:
        safety_mirror_sync()


class WebhookFailed(Exception):
    pass


@shared_task(name="safety.tasks.send_webhook", bind=True, ignore_result=True, autoretry_for=(WebhookFailed,),
             retry_backoff=1, retry_backoff_max=60, retry_jitter=False, max_retries=settings.WEBHOOK_MAX_RETRIES)
def send_webhook(self, body: dict) -> None:
    """POST one notification as JSON; retried with backoff on errors and non-2xx answers."""
    if not settings.WEBHOOK_URL:
        return
    request = urllib.request.Request(settings.WEBHOOK_URL, data=json.dumps(body).encode(), method="POST",  # noqa: S310 - operator-configured URL
                                     headers={"Content-Type": "application/json", "User-Agent": "TinyWindow"})
    try:
        with urllib.request.urlopen(request, timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise WebhookFailed(f"HTTP {response.status}")
    except (urllib.error.URLError, OSError) as exc:
        logger.warning("webhook %s failed (attempt %s): %s", body.get("event"), self.request.retries + 1, exc)
        raise WebhookFailed(str(exc)) from exc
