"""Paper venue tasks: thin, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from paper.services.matching import match_resting_orders as match_resting_orders_service


@shared_task(name="paper.tasks.match_resting_orders", ignore_result=True, queue="execution")
def match_resting_orders() -> None:
    """One matching pass of the paper venue (beat, every PAPER_MATCH_SECONDS, `execution` queue)."""
    match_resting_orders_service()
