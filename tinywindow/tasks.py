"""Housekeeping tasks of the whole system (default queue)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from tinywindow.backup import backup_create


# The dump may take longer than an ordinary task's limit; it must still end before the next
# one is due (BACKUP_SECONDS), so two never pile up. Running it twice only makes one more file.
@shared_task(name="tinywindow.tasks.backup_database", ignore_result=True,
             time_limit=settings.BACKUP_TIME_LIMIT, soft_time_limit=max(settings.BACKUP_TIME_LIMIT - 30, 1))
def backup_database() -> str:
    return str(backup_create().path)
