"""Notifications: a JSON webhook on kill-switch changes, breaker trips and resets.

Sent by a Celery task with retries and backoff, after the safety change has committed: a
slow or broken receiver never delays or blocks the safety action itself.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)


def notify_event(event: str, payload: dict[str, Any]) -> None:
    """Queue a webhook for `event` when WEBHOOK_URL is configured. Never raises."""
    if not settings.WEBHOOK_URL:
        return
    body = {"event": event, "at": timezone.now().isoformat(), "mode": "paper" if settings.PAPER_TRADING_MODE
            else "live", **payload}
    try:
        from safety.tasks import send_webhook

        send_webhook.delay(body)
    except Exception as exc:  # the broker may be the thing that is down; the action already happened
        logger.error("notification %s not queued: %s", event, exc)
