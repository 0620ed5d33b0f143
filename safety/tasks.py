"""Safety tasks on the `safety` queue: enforce the kill switch, heartbeat the mirror."""

from __future__ import annotations

import logging

from celery import shared_task

from safety.services.enforcement import kill_switch_enforce_now
from safety.services.kill_switch import kill_switch_state

logger = logging.getLogger(__name__)


@shared_task(name="safety.tasks.kill_switch_enforce", ignore_result=True)
def kill_switch_enforce() -> None:
    """Cancel every open order; with CLOSE_POSITIONS also flatten every position."""
    kill_switch_enforce_now()


@shared_task(name="safety.tasks.check_breakers", ignore_result=True)
def check_breakers() -> None:
    """Periodic safety sweep. Restores the kill-switch mirror if Redis lost it."""
    kill_switch_state()
